"""DivPrune reproduces every reference vector made with the official implementation."""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.divprune import DivPrune, divprune_select

from .vectors import load, parametrize_cases


@parametrize_cases("divprune")
def test_divprune_matches_official_selection_order(case: str) -> None:
    meta, tensors = load("divprune", case)
    features = tensors["in.features"]
    tokens = VisualTokens.from_grid(features, (1, 1, features.shape[0]))
    for run in meta["runs"]:
        rid, ratio = run["id"], run["params"]["SUBSET_RATIO"]
        n = int(round(ratio * features.shape[0]))
        assert n == run["params"]["n_select"]
        order = divprune_select(features, n)
        assert torch.equal(order, tensors[f"{rid}.selection_order"]), f"{case}/{rid}"
        kept = DivPrune(ratio=ratio).compress(tokens, Budget()).keep
        assert torch.equal(kept, tensors[f"{rid}.kept_idx"]), f"{case}/{rid}"


def test_budget_is_met_exactly_per_video_and_per_frame() -> None:
    tokens = VisualTokens.from_grid(torch.randn(4 * 16, 8, generator=torch.Generator().manual_seed(0)), (4, 4, 4))
    assert DivPrune().compress(tokens, Budget(retain=0.25)).keep.numel() == 16
    assert DivPrune().compress(tokens, Budget(tokens=7)).keep.numel() == 7
    keep = DivPrune().compress(tokens, Budget(retain=0.25, scope="frame")).keep
    assert torch.bincount(tokens.frame[keep]).tolist() == [4, 4, 4, 4]


def test_duplicates_are_never_picked_twice_and_tiny_inputs_do_not_crash() -> None:
    row = torch.randn(1, 8)
    assert divprune_select(row.repeat(5, 1), 5).sort().values.tolist() == [0, 1, 2, 3, 4]
    assert divprune_select(row, 1).tolist() == [0]
    selection = DivPrune().compress(VisualTokens.from_grid(torch.randn(4, 8), (1, 2, 2)), Budget())
    assert selection.keep.numel() == 1 and selection.notes


def test_ratio_and_budget_conflict_is_refused() -> None:
    with pytest.raises(ValueError):
        DivPrune(ratio=0.2).resolve_budget(Budget(retain=0.5))
    with pytest.raises(ValueError):
        DivPrune(ratio=0.0)
