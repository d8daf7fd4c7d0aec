"""CenterCLIP: k-medoids as the official batched formulation computes it, exact budgets, medoids kept as they are."""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.centerclip import CenterCLIP, kmedoids


def _official_style_kmedoids(x: torch.Tensor, k: int, iters: int = 100, threshold: float = 1e-6) -> torch.Tensor:
    """The paper code's formulation, written out: all-negative shifted distances with a lowered diagonal,
    KKZ init, and the medoid update as an argmin over [K, N, N] masked row sums."""
    d = torch.cdist(x, x)
    d = d - d.max() - 1.0
    d[torch.arange(len(x)), torch.arange(len(x))] -= 1.0
    medoids = [int(torch.argmax(x.norm(dim=-1)))]
    for _ in range(1, k):
        medoids.append(int(torch.argmax(d[medoids].min(dim=0).values)))
    medoids = torch.tensor(medoids)
    for _ in range(iters):
        assign = d[medoids].argmin(dim=0)
        mask = assign[None, :] == torch.arange(k)[:, None]  # [K, N]
        sub = d[None] * mask[:, :, None] * mask[:, None, :]
        new = sub.sum(dim=-1).argmin(dim=-1)
        shift = (x[new] - x[medoids]).norm(dim=-1).sum()
        medoids = new
        if shift < threshold:
            break
    return torch.sort(medoids).values


@pytest.mark.parametrize("seed", range(6))
def test_kmedoids_matches_the_official_formulation(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 12, generator=g) + 3.0 * torch.randn(4, 1, 12, generator=g).repeat_interleave(12, 0).squeeze(1)
    for k in (1, 3, 7, 16):
        medoids, assign = kmedoids(x, k)
        assert torch.equal(medoids, _official_style_kmedoids(x, k))
        assert torch.equal(assign[medoids], torch.arange(k)), "every medoid is in its own cluster"
        assert torch.equal(assign, torch.cdist(x, x[medoids]).argmin(dim=1))


def test_kmedoids_edge_counts() -> None:
    x = torch.randn(5, 3)
    assert kmedoids(x, 5)[0].tolist() == [0, 1, 2, 3, 4]
    assert kmedoids(x, 9)[0].tolist() == [0, 1, 2, 3, 4]
    assert kmedoids(x, 0)[0].numel() == 0


def _tokens(frames: int = 4, side: int = 4, dim: int = 16, seed: int = 0) -> VisualTokens:
    g = torch.Generator().manual_seed(seed)
    return VisualTokens.from_grid(torch.randn(frames * side * side, dim, generator=g), (frames, side, side))


@pytest.mark.parametrize("budget", [Budget(retain=0.1), Budget(retain=0.25), Budget(retain=0.5), Budget(tokens=1),
                                    Budget(tokens=2), Budget(tokens=77)])
def test_budget_is_met_exactly_with_real_tokens(budget: Budget) -> None:
    tokens = _tokens(frames=5)  # segments of 2, 2 and 1 frames
    selection = CenterCLIP().compress(tokens, budget)
    assert selection.keep.numel() == budget.count(len(tokens))
    assert selection.features is None, "medoids are kept as they are (their own features and positions)"
    if budget.count(len(tokens)) < 3:
        assert any("dropped whole" in note for note in selection.notes)


def test_medoids_come_from_their_own_segment_in_proportion() -> None:
    tokens = _tokens(frames=6)
    keep = CenterCLIP(segment_frames=3).compress(tokens, Budget(retain=0.25)).keep
    assert torch.bincount(tokens.frame[keep] // 3).tolist() == [12, 12]
    rows = torch.arange(48)
    medoids, _ = kmedoids(tokens.features[rows], 12)
    assert torch.equal(keep[:12], rows[medoids])


def test_default_keeps_one_frame_of_medoids_per_segment() -> None:
    tokens = _tokens(frames=5)
    keep = CenterCLIP().compress(tokens, Budget()).keep
    assert keep.numel() == 16 + 16 + 16  # the last one-frame segment keeps all of its frame
    assert CenterCLIP(clusters=5).compress(tokens, Budget()).keep.numel() == 15
    assert CenterCLIP(segment_frames=4).compress(tokens, Budget()).keep.numel() == 32


def test_runs_on_tokens_already_thinned_by_an_earlier_stage() -> None:
    tokens = _tokens(frames=4)
    thinned = tokens.subset(torch.arange(0, 64, 3))
    selection = CenterCLIP(distance="cosine").compress(thinned, Budget(tokens=6))
    assert selection.keep.numel() == 6 and int(selection.keep.max()) < len(thinned)


def test_knob_validation_and_refusals() -> None:
    for bad in (dict(segment_frames=0), dict(clusters=0), dict(iterations=0), dict(threshold=-1.0),
                dict(distance="manhattan"), dict(segment_frames=2.0)):
        with pytest.raises(ValueError):
            CenterCLIP(**bad)
    with pytest.raises(ValueError, match="not both"):
        CenterCLIP(clusters=8).resolve_budget(Budget(retain=0.2))
    with pytest.raises(ValueError, match="video-level"):
        CenterCLIP().resolve_budget(Budget(retain=0.2, scope="frame"))
