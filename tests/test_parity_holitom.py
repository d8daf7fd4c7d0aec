"""HoliTom's outer stage reproduces every official reference run; the D > 0 fix, budgets and positions behave.

No stored run diverges on purpose: every vector uses D = 0 (D > 0 crashes officially, so it has no
vector) and none depends on the density noise.
"""
from __future__ import annotations

import math

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.budget import apportion
from vtc.methods.holitom import HoliTom, holitom_select, select_static_windows

from .vectors import load, parametrize_cases
from .video_like import video_tokens


def _run(tensors: dict, params: dict, **overrides):
    knobs = dict(retain_ratio=params["RETAIN_RATIO"], tau=params["T_tau"], beta=params["BETA"], d=params["D"],
                 k=params["K"], max_window_size=params["MAX_WINDOW_SIZE"])
    knobs.update(overrides)
    return holitom_select(tensors["in.features"], tensors["in.attn"], **knobs)


@parametrize_cases("holitom")
def test_holitom_matches_official_outputs(case: str) -> None:
    meta, tensors = load("holitom", case)
    for run in meta["runs"]:
        rid = run["id"]
        result = _run(tensors, run["params"])
        assert torch.equal(result.windows, tensors[f"{rid}.windows"]), f"{case}/{rid}"
        assert result.total_reduced == run["total_reduced"]
        assert result.retain_after_static == pytest.approx(run["retain_ratio_after_static"], rel=1e-12)
        for name in ("out_pos", "out_frame", "out_is_static"):
            assert torch.equal(getattr(result, name), tensors[f"{rid}.{name}"]), f"{case}/{rid}: {name}"
        assert torch.allclose(result.out_features, tensors[f"{rid}.out_features"], rtol=1e-4, atol=1e-5)


@parametrize_cases("holitom")
def test_method_keeps_the_official_tokens_at_their_representative_rows(case: str) -> None:
    meta, tensors = load("holitom", case)
    run = meta["runs"][0]
    params, rid = run["params"], run["id"]
    features, attn = tensors["in.features"], tensors["in.attn"]
    t, n, _ = features.shape
    side = math.isqrt(n)
    tokens = VisualTokens.from_grid(features.reshape(t * n, -1), (t, side, side))
    tokens.vision_saliency = attn.flatten()
    method = HoliTom(retain_ratio=params["RETAIN_RATIO"], tau=params["T_tau"], beta=params["BETA"], d=params["D"],
                     k=params["K"], max_window_size=params["MAX_WINDOW_SIZE"])
    selection = method.compress(tokens, Budget())
    assert selection.notes == []
    rows = tensors[f"{rid}.out_frame"] * n + tensors[f"{rid}.out_pos"]
    order = torch.argsort(rows)
    assert torch.equal(selection.keep, rows[order])
    assert torch.allclose(selection.features, tensors[f"{rid}.out_features"][order], rtol=1e-4, atol=1e-5)


def _static_video(t: int = 4, side: int = 4, dim: int = 16, moving: int = 6, seed: int = 0) -> torch.Tensor:
    """[T, N, D]: every position fixed over time except the first ``moving`` ones, which change every frame."""
    g = torch.Generator().manual_seed(seed)
    n = side * side
    base = torch.randn(1, n, dim, generator=g).expand(t, n, dim).clone()
    base[:, :moving] = torch.randn(t, moving, dim, generator=g)
    return base


def test_d_above_zero_is_fixed_dominant_by_saliency_plus_merged_contextual_centres() -> None:
    g = torch.Generator().manual_seed(1)
    features, saliency = torch.randn(2, 16, 8, generator=g), torch.rand(2, 16, generator=g)
    result = holitom_select(features, saliency, retain_ratio=0.25, tau=0.99, beta=0.6, d=0.5, k=7, max_window_size=1024)
    assert result.total_reduced == 0 and not bool(result.out_is_static.any())
    for f in range(2):
        pos = result.out_pos[result.out_frame == f]
        feats = result.out_features[result.out_frame == f]
        assert pos.numel() == 4  # ceil(16*0.25), of which round(4*0.5) = 2 dominant
        dominant = torch.sort(torch.topk(saliency[f], 2).indices).values
        assert torch.equal(pos[:2], dominant) and torch.equal(feats[:2], features[f, dominant])
        assert not set(pos[2:].tolist()) & set(dominant.tolist())
        # Each contextual centre is 0.6*itself + 0.4*mean of the other non-dominant tokens nearest to it.
        centres = pos[2:]
        others = torch.tensor([i for i in range(16) if i not in dominant.tolist() + centres.tolist()])
        nearest = torch.cdist(features[f, others], features[f, centres]).argmin(dim=1)
        for j, c in enumerate(centres.tolist()):
            members = others[nearest == j]
            expected = features[f, c] if members.numel() == 0 else 0.6 * features[f, c] + 0.4 * features[f, members].mean(0)
            assert torch.allclose(feats[2 + j], expected, atol=1e-6)
    no_context = holitom_select(features, saliency, retain_ratio=0.25, tau=0.99, beta=0.6, d=0.0, k=7, max_window_size=1024)
    assert no_context.out_pos.numel() == result.out_pos.numel()


def test_static_tokens_sit_at_the_first_frame_of_their_window() -> None:
    features = _static_video()
    t, n, dim = features.shape
    tokens = VisualTokens.from_grid(features.reshape(t * n, dim), (t, 4, 4))
    selection = HoliTom(retain_ratio=0.25, tau=0.8).compress(tokens, Budget())
    result = holitom_select(features, torch.zeros(t, n), retain_ratio=0.25, tau=0.8, beta=0.6, d=0.0, k=7,
                            max_window_size=1024)
    assert result.windows.tolist() == [[0, 3]]
    static_rows = set(result.out_pos[result.out_is_static].tolist())  # window starts at frame 0: row == position
    assert static_rows and static_rows <= set(selection.keep.tolist())
    assert all(p >= 6 for p in static_rows), "only the fixed positions are static"
    assert "saliency fallback" in selection.notes[0]


@pytest.mark.parametrize("budget", [Budget(retain=0.1), Budget(retain=0.25), Budget(tokens=5), Budget(tokens=1)])
def test_budget_is_met_exactly(budget: Budget) -> None:
    features = _static_video(t=6, side=6, moving=20)
    t, n, dim = features.shape
    tokens = VisualTokens.from_grid(features.reshape(t * n, dim), (t, 6, 6))
    tokens.attn = torch.rand(t * n, generator=torch.Generator().manual_seed(2))
    selection = HoliTom().compress(tokens, budget)
    assert selection.keep.numel() == budget.count(t * n)
    assert selection.notes == ["saliency: no ViT attention given, used tokens.attn"]


def test_budget_above_what_static_merging_leaves_shortens_windows_just_enough() -> None:
    tokens = video_tokens(16, 14)  # a static background and one moving object: 3,136 tokens
    t, n = 16, 196
    features = tokens.features.view(t, n, -1)
    normed = torch.nn.functional.normalize(features, dim=-1)
    similarity = torch.cosine_similarity(normed[:-1], normed[1:], dim=-1)

    def left(tau: float, cap: int) -> int:
        return t * n - select_static_windows(similarity > tau, cap)[1]

    assert left(0.8, t) < 1568, "the test needs static merging at the scripts' tau to undercut retain 0.5"
    for retain in (0.5, 0.25, 0.1, 0.05):
        count = Budget(retain=retain).count(t * n)
        tau = 0.65 if retain <= 0.1 else 0.8
        selection = HoliTom().compress(tokens, Budget(retain=retain))
        result = holitom_select(features, tokens.vision_saliency.view(t, n), retain_ratio=retain, tau=tau, beta=0.6,
                                d=0.0, k=7, max_window_size=1024, count=count)
        assert selection.keep.numel() == count
        assert result.out_is_static.any(), "tau is kept, so static positions are still merged"
        if left(tau, t) >= count:
            assert result.max_window_size == t and not selection.notes
            continue
        cap = result.max_window_size
        assert left(tau, cap) >= count > left(tau, cap + 1), "the longest cap that leaves enough tokens"
        assert all(e - s + 1 <= cap for s, e in result.windows.tolist())
        note = (f"windows capped at {cap} frames: static merging over the DP's windows (at most 1024 frames, "
                f"tau {tau:g}) leaves {left(tau, t)} tokens, fewer than the budget of {count}")
        assert selection.notes == [note]


def test_without_a_budget_the_official_shortfall_is_kept_and_noted() -> None:
    features = torch.randn(1, 16, 8).expand(4, 16, 8).contiguous()
    tokens = VisualTokens.from_grid(features.reshape(64, 8), (4, 4, 4))
    selection = HoliTom(retain_ratio=0.5).compress(tokens, Budget())
    assert selection.keep.numel() == 16 and selection.keep.max() < 16
    assert any("left only 16" in note for note in selection.notes)


def test_tau_follows_the_scripts_when_unset() -> None:
    # Consecutive frames have cosine ~0.7 at every position: static at tau 0.65, dynamic at 0.8.
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(1, 16, 256, generator=g), dim=-1)
    noise = torch.randn(4, 16, 256, generator=g)
    noise = torch.nn.functional.normalize(noise - (noise * base).sum(-1, keepdim=True) * base, dim=-1)
    features = base + 0.62 * noise
    sim = torch.cosine_similarity(features[:-1], features[1:], dim=-1)
    assert bool((sim > 0.65).all()) and bool((sim < 0.8).all())
    tokens = VisualTokens.from_grid(features.reshape(64, 256), (4, 4, 4))

    def kept(method: HoliTom, budget: Budget) -> list[int]:
        return method.compress(tokens, budget).keep.tolist()

    assert kept(HoliTom(), Budget(retain=0.1)) == kept(HoliTom(tau=0.65), Budget(retain=0.1))
    assert kept(HoliTom(), Budget(retain=0.1)) != kept(HoliTom(tau=0.8), Budget(retain=0.1))
    assert kept(HoliTom(), Budget(retain=0.25)) == kept(HoliTom(tau=0.8), Budget(retain=0.25))
    assert kept(HoliTom(), Budget()) == kept(HoliTom(tau=0.65, retain_ratio=0.1), Budget())
    assert all(row < 16 for row in kept(HoliTom(tau=0.65), Budget(retain=0.1))), "one static window, at frame 0"


def test_apportion_is_exact_proportional_and_capped() -> None:
    assert apportion([10, 0, 5, 3], 7) == [3, 0, 2, 2]
    assert apportion([10, 0, 5, 3], 2) == [1, 0, 1, 0]
    assert apportion([10, 0, 5, 3], 30) == [10, 0, 5, 3]
    sizes = [7, 1, 13, 0, 40]
    for total in range(1, sum(sizes) + 1):
        out = apportion(sizes, total)
        assert sum(out) == total and all(0 <= o <= s for o, s in zip(out, sizes))


def test_knob_validation_and_refusals() -> None:
    with pytest.raises(ValueError, match="runs only with inner_layer"):
        HoliTom(inner_ratio=0.5)
    for bad in (dict(retain_ratio=0.0), dict(tau=1.5), dict(beta=-0.1), dict(d=2.0), dict(k=0), dict(max_window_size=True)):
        with pytest.raises(ValueError):
            HoliTom(**bad)
    with pytest.raises(ValueError, match="not both"):
        HoliTom(retain_ratio=0.2).resolve_budget(Budget(retain=0.2))
    with pytest.raises(ValueError, match="video-level"):
        HoliTom().resolve_budget(Budget(retain=0.2, scope="frame"))
    tokens = VisualTokens.from_grid(torch.randn(32, 4), (2, 4, 4))
    with pytest.raises(ValueError, match="same"):
        HoliTom().compress(tokens.subset(torch.arange(1, 32)), Budget(retain=0.5))
