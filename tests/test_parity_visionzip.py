"""VisionZip against the official implementation's outputs (../shared/vectors/visionzip), and the method
class on the same inputs through vtc's per-frame interface."""
from __future__ import annotations

import torch

from vtc import Budget
from vtc.methods.visionzip import VisionZip, split_frame, zip_frame
from vtc.tokens import VisualTokens

from .vectors import load, parametrize_cases


def _official_layout(cls_attn, hidden, metric, dominant: int, contextual: int):
    """Per frame, vtc's decision laid out as the official output: [CLS, dominant ascending] ++ contextual."""
    dominant_sorted, outputs = [], []
    for b in range(hidden.shape[0]):
        score, keys, patches = cls_attn[b, :, 1:].sum(dim=0), metric[b, 1:], hidden[b, 1:]
        dom, targets, _, _ = split_frame(score, keys, dominant - 1, contextual)
        kept, features, position = zip_frame(score, keys, patches, dominant - 1, contextual)
        features = patches[kept] if features is None else features
        dom = torch.sort(dom).values
        dominant_sorted.append(torch.cat([torch.zeros(1, dtype=torch.long), dom + 1]))
        outputs.append(torch.cat([hidden[b, :1], patches[dom], features[position[targets]]]))
    return torch.stack(dominant_sorted), torch.stack(outputs)


@parametrize_cases("visionzip")
def test_visionzip_matches_official_vectors(case: str) -> None:
    meta, t = load("visionzip", case)
    for run in meta["runs"]:
        p = run["params"]
        dominant_sorted, out = _official_layout(
            t["in.cls_attn"], t["in.hidden_states"], t["in.metric"], p["dominant"], p["contextual"]
        )
        assert torch.equal(dominant_sorted, t[f"{run['id']}.dominant_idx_sorted"]), f"{case} {run['id']}"
        torch.testing.assert_close(out, t[f"{run['id']}.out_tokens"], rtol=1e-5, atol=1e-5)


@parametrize_cases("visionzip")
def test_method_on_a_cls_tower_keeps_the_official_tokens(case: str) -> None:
    """The registered method with the paper's knobs, given each frame's patch rows as a vision-stage
    driver hands them (the [CLS] outside the rows), keeps and merges what the official code does."""
    meta, t = load("visionzip", case)
    hidden, cls_attn, metric = t["in.hidden_states"], t["in.cls_attn"], t["in.metric"]
    frames, patches = hidden.shape[0], hidden.shape[1] - 1
    tokens = VisualTokens.from_grid(hidden[:, 1:].reshape(frames * patches, -1), (frames, 1, patches))
    tokens.vision_saliency = cls_attn[:, :, 1:].sum(dim=1).reshape(-1)
    tokens.vision_keys = metric[:, 1:].reshape(frames * patches, -1)
    tokens.vision_cls = True
    for run in meta["runs"]:
        p = run["params"]
        method = VisionZip(dominant=p["dominant"], contextual=p["contextual"])
        selection = method.compress(tokens, method.resolve_budget(Budget()))
        want = t[f"{run['id']}.out_tokens"]  # [frames, 1 + dominant - 1 + contextual, C]
        per_frame = run["n_out_per_frame"] - 1
        assert selection.keep.numel() == frames * per_frame
        got = selection.features.view(frames, per_frame, -1)
        # Same multiset of tokens per frame (vtc keeps them in raster order, the official code dominant-first).
        for f in range(frames):
            a, b = got[f], want[f, 1:]
            torch.testing.assert_close(a[torch.argsort(a.sum(dim=1))], b[torch.argsort(b.sum(dim=1))], rtol=1e-5, atol=1e-5)


def test_budget_splits_dominant_and_contextual_like_the_paper() -> None:
    tokens = VisualTokens.from_grid(torch.randn(2 * 64, 8), (2, 8, 8))
    tokens.vision_saliency, tokens.vision_keys = torch.rand(128), torch.randn(128, 4)
    selection = VisionZip().compress(tokens, Budget(retain=0.5))
    assert selection.keep.numel() == 64
    for frame in range(2):
        rows = selection.keep[(selection.keep // 64) == frame] % 64
        dom = torch.sort(tokens.vision_saliency[frame * 64:(frame + 1) * 64], descending=True).indices[:27]
        assert set(dom.tolist()) <= set(rows.tolist()), "27 of 32 per frame are the top-attention tokens"
    assert (selection.merged_into >= 0).all(), "with contextual targets every token goes somewhere"


def test_retain_one_changes_nothing() -> None:
    tokens = VisualTokens.from_grid(torch.randn(64, 8), (1, 8, 8))
    tokens.vision_saliency, tokens.vision_keys = torch.rand(64), torch.randn(64, 4)
    selection = VisionZip().compress(tokens, Budget(retain=1.0))
    assert torch.equal(selection.keep, torch.arange(64)) and selection.features is None
