"""DyCoke TTM reproduces every reference vector made with the official implementation.

Deliberate divergence: ``random_T9_odd_7x7_D32`` run0 has an odd number of frames, and the official
code silently drops the last one. vtc keeps that unpaired frame whole as an anchor, so its output is
the official output followed by every token of frame 8; everything else matches exactly.
"""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.dycoke import DyCoke, budget_keep, dycoke_ttm, official_keep, reference_frames

from .vectors import load, parametrize_cases


@parametrize_cases("dycoke")
def test_dycoke_matches_official_output_order(case: str) -> None:
    meta, tensors = load("dycoke", case)
    features = tensors["in.features"]
    n = int(tensors["in.num_tokens_per_frame"])
    t = features.shape[0] // n
    tokens = VisualTokens.from_grid(features, (t, 1, n))
    for run in meta["runs"]:
        rid, k = run["id"], run["params"]["dycoke_k"]
        expected = tensors[f"{rid}.out_src_idx"]
        per_frame = tensors[f"{rid}.tokens_per_frame"].clone()
        if t % 2:  # fixed: the unpaired last frame is kept whole instead of dropped
            assert per_frame[-1] == 0
            expected = torch.cat([expected, torch.arange((t - 1) * n, t * n)])
            per_frame[-1] = n
        keep = official_keep([n] * t, k)
        assert keep == per_frame.tolist(), f"{case}/{rid}"
        out = dycoke_ttm(features.view(t, n, -1), keep)
        assert torch.equal(out, expected), f"{case}/{rid}"
        assert torch.equal(features[out][: run["n_out"]], tensors[f"{rid}.out_features"])
        kept = DyCoke(k=k).compress(tokens, Budget()).keep
        assert torch.equal(kept, torch.sort(expected).values), f"{case}/{rid}"


def test_reference_plan_keeps_official_last_window_and_fixes_short_and_odd_videos() -> None:
    assert reference_frames(8) == [-1, 0, 0, 2, -1, 4, -1, 6]  # frame 6 stays whole, as official
    assert reference_frames(4) == [-1, 0, -1, 2]  # official: crash
    assert reference_frames(5) == [-1, 0, 0, 2, -1]  # official: frame 4 dropped
    assert reference_frames(1) == [-1]


@pytest.mark.parametrize("frames", [1, 2, 4, 5, 8])
@pytest.mark.parametrize("retain", [0.05, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_budget_is_met_exactly(frames: int, retain: float) -> None:
    tokens = VisualTokens.from_grid(torch.randn(frames * 16, 8, generator=torch.Generator().manual_seed(frames)),
                                    (frames, 4, 4))
    budget = Budget(retain=retain)
    selection = DyCoke().compress(tokens, budget)
    assert selection.keep.numel() == budget.count(len(tokens))
    counts = [16] * frames
    floor = sum(c for c, ref in zip(counts, reference_frames(frames)) if ref < 0)
    assert bool(selection.notes) == (budget.count(len(tokens)) < floor)


def test_budget_smaller_than_the_number_of_anchor_frames() -> None:
    tokens = VisualTokens.from_grid(torch.randn(6 * 16, 8, generator=torch.Generator().manual_seed(2)), (6, 4, 4))
    selection = DyCoke().compress(tokens, Budget(tokens=1))
    assert selection.keep.tolist() == [8] and selection.notes  # the middle cell (raster order) of frame 0


def test_budget_keeps_anchors_whole_and_shares_the_rest_evenly() -> None:
    keep, note = budget_keep([10] * 8, 47)
    assert keep == [10, 4, 4, 3, 10, 3, 10, 3] and note is None
    keep, note = budget_keep([10] * 4, 7)
    assert keep == [4, 0, 3, 0] and note


def test_tokens_missing_from_the_grid_are_skipped() -> None:
    tokens = VisualTokens.from_grid(torch.randn(4 * 16, 8, generator=torch.Generator().manual_seed(1)), (4, 4, 4))
    partial = tokens.subset(torch.arange(3, 64, 2))
    kept = DyCoke().compress(partial, Budget()).keep
    frame_counts = torch.bincount(partial.frame, minlength=4).tolist()
    assert torch.bincount(partial.frame[kept], minlength=4).tolist() == official_keep(frame_counts, 0.7)


def test_knob_and_budget_conflicts_are_refused() -> None:
    with pytest.raises(ValueError):
        DyCoke(k=0.5).resolve_budget(Budget(retain=0.5))
    with pytest.raises(ValueError):
        DyCoke().resolve_budget(Budget(retain=0.5, scope="frame"))
    with pytest.raises(ValueError):
        DyCoke(k=1.5)
