"""VidCom2 reproduces every reference vector made with the official implementation (Qwen2.5-VL path)."""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.vidcom2 import VidCom2, exact_frame_budgets, vidcom2_select

from .vectors import load, parametrize_cases

MERGE = 2


@parametrize_cases("vidcom2")
def test_vidcom2_matches_official_budgets_and_indices(case: str) -> None:
    meta, tensors = load("vidcom2", case)
    t, gh, gw = tensors["in.grid_thw"].tolist()
    grid = (t, gh // MERGE, gw // MERGE)
    features = tensors["in.features"]
    tokens = VisualTokens.from_grid(features, grid)
    for run in meta["runs"]:
        rid, base = run["id"], run["params"]["base_scale"]
        result = vidcom2_select(features, [grid[1] * grid[2]] * t, base)
        assert torch.equal(result.keep, tensors[f"{rid}.kept_idx"]), f"{case}/{rid}"
        assert torch.equal(result.frame_budget, tensors[f"{rid}.frame_budget"]), f"{case}/{rid}"
        assert torch.allclose(result.frame_scale, tensors[f"{rid}.frame_scale"], rtol=1e-4, atol=1e-5)
        assert torch.allclose(result.token_score.view(t, -1), tensors[f"{rid}.token_score"], rtol=1e-4, atol=1e-5)
        kept = VidCom2(base_scale=base).compress(tokens, Budget()).keep
        assert torch.equal(kept, tensors[f"{rid}.kept_idx"]), f"{case}/{rid}"


@parametrize_cases("vidcom2")
@pytest.mark.parametrize("retain", [0.1, 0.25, 0.5, 0.9])
def test_budget_is_met_exactly_and_keeps_the_official_ranking(case: str, retain: float) -> None:
    _, tensors = load("vidcom2", case)
    t, gh, gw = tensors["in.grid_thw"].tolist()
    tokens = VisualTokens.from_grid(tensors["in.features"], (t, gh // MERGE, gw // MERGE))
    budget = Budget(retain=retain)
    kept = VidCom2().compress(tokens, budget).keep
    assert kept.numel() == budget.count(len(tokens))
    official = VidCom2(base_scale=retain).compress(tokens, Budget()).keep
    # Only the per-frame counts move: within each frame both keep a prefix of the same ranking.
    for frame in range(t):
        a, b = set(kept[tokens.frame[kept] == frame].tolist()), set(official[tokens.frame[official] == frame].tolist())
        assert a <= b or b <= a


def test_exact_frame_budgets_respects_frame_sizes_and_empties_frames_only_when_needed() -> None:
    sizes = torch.tensor([4, 4, 4])
    target = torch.tensor([3.9, 0.2, 0.4])
    assert exact_frame_budgets(target, torch.tensor([4, 1, 1]), sizes, 9).tolist() == [4, 2, 3]
    assert exact_frame_budgets(target, torch.tensor([4, 1, 1]), sizes, 3).tolist() == [1, 1, 1]
    assert exact_frame_budgets(target, torch.tensor([4, 1, 1]), sizes, 2).tolist() == [2, 0, 0]


def test_per_frame_scope_and_uneven_frames() -> None:
    tokens = VisualTokens.from_grid(torch.randn(4 * 16, 8, generator=torch.Generator().manual_seed(0)), (4, 4, 4))
    keep = VidCom2().compress(tokens, Budget(retain=0.25, scope="frame")).keep
    assert torch.bincount(tokens.frame[keep]).tolist() == [4, 4, 4, 4]
    partial = tokens.subset(torch.arange(5, 64))
    assert VidCom2().compress(partial, Budget(tokens=10)).keep.numel() == 10


def test_base_scale_and_budget_conflict_is_refused() -> None:
    with pytest.raises(ValueError):
        VidCom2(base_scale=0.3).resolve_budget(Budget(retain=0.5))
    with pytest.raises(ValueError):
        VidCom2(base_scale=1.5)
