"""FastVID reproduces every reference vector of the official Qwen2.5-VL path, and its vtc wrapper
meets budgets exactly, survives short videos and says which fallbacks it took."""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.fastvid import FastVID, fastvid_select
from vtc.saliency import ats_saliency

from .vectors import load, parametrize_cases

MERGE = 2
INDEX_OUTPUTS = ("kept_idx", "segment_sizes", "frame_salient_num", "frame_context_num", "salient_idx", "context_anchor_idx")


def _knobs(params: dict) -> dict:
    return dict(
        retention_ratio=params["retention_ratio"], dyseg_c=params["DySeg_c"], dyseg_tau=params["DySeg_tau"],
        dyseg_ignore=params["DySeg_ignore"], stprune_d=params["STPrune_d"], dtm_p=params["DTM_p"],
        dtm_beta=params["DTM_beta"],
    )


@parametrize_cases("fastvid")
def test_fastvid_matches_official(case: str) -> None:
    meta, tensors = load("fastvid", case)
    t, gh, gw = tensors["in.grid_thw"].tolist()
    grid = (t, gh // MERGE, gw // MERGE)
    embeds, attn = tensors["in.video_embeds"], tensors["in.frame_attn"]
    for run in meta["runs"]:
        rid, knobs = run["id"], _knobs(run["params"])
        result = fastvid_select(embeds.view(t, grid[1] * grid[2], -1), attn, **knobs)
        for name in INDEX_OUTPUTS:
            assert torch.equal(getattr(result, name), tensors[f"{rid}.{name}"]), f"{case}/{rid}: {name}"
        expected = tensors[f"{rid}.kept_features"]
        assert torch.allclose(result.kept_features, expected, rtol=1e-4, atol=1e-5), f"{case}/{rid}: features"
        is_salient = torch.isin(result.kept_idx, result.salient_idx)
        assert torch.equal(result.kept_features[is_salient], embeds[result.kept_idx[is_salient]]), "salient rows are copies"

        # The registered method runs the same computation on VisualTokens, given the ViT saliency.
        tokens = VisualTokens.from_grid(embeds, grid)
        tokens.vision_saliency = attn
        selection = FastVID(**knobs).compress(tokens, Budget())
        assert torch.equal(selection.keep, tensors[f"{rid}.kept_idx"])
        assert torch.allclose(selection.features, expected, rtol=1e-4, atol=1e-5)
        assert selection.notes == []


@parametrize_cases("fastvid_ats")
def test_ats_saliency_matches_official(case: str) -> None:
    meta, tensors = load("fastvid_ats", case)
    grid = tuple(tensors["in.grid_thw"].tolist())
    for run in meta["runs"]:
        saliency = ats_saliency(tensors["in.q"], tensors["in.k"], grid, merge=MERGE)
        assert torch.allclose(saliency, tensors[f"{run['id']}.frame_attn"], rtol=1e-5, atol=1e-7)


def _video(t: int = 6, h: int = 4, w: int = 5, d: int = 16, seed: int = 0) -> VisualTokens:
    generator = torch.Generator().manual_seed(seed)
    background = torch.randn(1, h * w, d, generator=generator)
    frames = background + 0.3 * torch.randn(t, h * w, d, generator=generator)
    return VisualTokens.from_grid(frames.reshape(t * h * w, d), (t, h, w))


@pytest.mark.parametrize("budget", [Budget(retain=0.1), Budget(retain=0.27), Budget(retain=0.9), Budget(tokens=7), Budget(tokens=1)])
def test_vtc_budget_is_met_exactly(budget: Budget) -> None:
    tokens = _video()
    selection = FastVID().compress(tokens, budget)
    assert selection.keep.numel() == budget.count(len(tokens))
    assert selection.features.shape == (selection.keep.numel(), tokens.features.shape[1])


def test_full_budget_keeps_everything_unmerged() -> None:
    tokens = _video()
    selection = FastVID().compress(tokens, Budget(retain=1.0))
    assert torch.equal(selection.keep, torch.arange(len(tokens)))
    assert torch.equal(selection.features, tokens.features)


def test_short_video_clamps_segments_and_notes_the_fallbacks() -> None:
    tokens = _video(t=3)
    selection = FastVID().compress(tokens, Budget())
    assert any("clamped" in note for note in selection.notes)
    assert any("saliency fallback" in note for note in selection.notes)
    # c clamped to T: every frame is its own segment and keeps int(N * 0.27) tokens, as official with T == c.
    assert selection.keep.numel() == 3 * int(20 * 0.27)


def test_presets_and_conflicts() -> None:
    llava = FastVID(preset="llava")
    assert (llava.dyseg_tau, llava.dyseg_ignore) == (0.9, float("inf"))
    assert FastVID(preset="llava", dyseg_tau=0.8).dyseg_tau == 0.8
    assert FastVID().dyseg_tau == 0.84
    with pytest.raises(ValueError, match="preset"):
        FastVID(preset="other")
    with pytest.raises(ValueError, match="not both"):
        FastVID(retention_ratio=0.3).resolve_budget(Budget(retain=0.25))
    with pytest.raises(ValueError, match="video-level"):
        FastVID().resolve_budget(Budget(retain=0.25, scope="frame"))
    with pytest.raises(ValueError, match="dyseg_c"):
        FastVID(dyseg_c=0)


def test_ragged_frames_are_refused() -> None:
    tokens = _video()
    with pytest.raises(ValueError, match="same positions"):
        FastVID().compress(tokens.subset(torch.arange(1, len(tokens))), Budget(retain=0.25))
