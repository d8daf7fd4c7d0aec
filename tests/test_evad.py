"""EVAD keeps the keyframe whole, prefers tokens that move relative to it, and meets budgets exactly."""
from __future__ import annotations

import math

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.evad import EVAD

T, H, W, D = 5, 4, 4, 8
N = H * W


def _clip(moving: tuple[int, ...] = (3, 9), seed: int = 0) -> VisualTokens:
    """A static background with a few positions that change in every frame but the keyframe (t=2)."""
    generator = torch.Generator().manual_seed(seed)
    background = torch.randn(1, N, D, generator=generator)
    frames = background + 0.01 * torch.randn(T, N, D, generator=generator)
    for t in range(T):
        if t != T // 2:
            frames[t, list(moving)] = torch.randn(len(moving), D, generator=generator)
    return VisualTokens.from_grid(frames.reshape(T * N, D), (T, H, W))


def _keyframe_rows() -> set[int]:
    return set(range((T // 2) * N, (T // 2 + 1) * N))


def test_keyframe_is_the_centre_frame_and_kept_whole() -> None:
    tokens = _clip()
    keep = set(EVAD().compress(tokens, Budget(retain=0.3)).keep.tolist())
    assert _keyframe_rows() <= keep


def test_moving_tokens_are_preferred() -> None:
    tokens = _clip(moving=(3, 9))
    keep = EVAD().compress(tokens, Budget(tokens=N + 8)).keep
    others = sorted(set(keep.tolist()) - _keyframe_rows())
    assert others == sorted(t * N + i for t in range(T) if t != T // 2 for i in (3, 9))


@pytest.mark.parametrize("budget", [Budget(retain=0.1), Budget(retain=0.25), Budget(retain=0.5), Budget(tokens=21), Budget(tokens=3)])
def test_budget_is_met_exactly(budget: Budget) -> None:
    tokens = _clip()
    selection = EVAD().compress(tokens, budget)
    assert selection.keep.numel() == budget.count(len(tokens))
    assert selection.features is None


def test_budget_below_one_frame_keeps_the_keyframes_most_moving_positions_and_notes_it() -> None:
    tokens = _clip(moving=(3, 9))
    selection = EVAD().compress(tokens, Budget(tokens=2))
    assert selection.keep.tolist() == [(T // 2) * N + 3, (T // 2) * N + 9]
    assert any("keyframe" in note for note in selection.notes)
    assert EVAD().compress(tokens, Budget(tokens=N)).notes == []


def test_default_reproduces_three_rounds_of_keep_rate_0_7() -> None:
    tokens = _clip()
    expected = math.ceil(0.7 * math.ceil(0.7 * math.ceil(0.7 * T * N)))
    assert EVAD().compress(tokens, Budget()).keep.numel() == expected
    assert EVAD(keep_rate=0.5, stages=1).compress(tokens, Budget()).keep.numel() == T * N // 2


def test_missing_keyframe_counterparts_count_as_motion_and_single_frames_work() -> None:
    tokens = _clip()
    holes = tokens.subset(torch.tensor([i for i in range(T * N) if i != (T // 2) * N + 5]))
    keep = set(holes.source[EVAD().compress(holes, Budget(tokens=N - 1 + 4)).keep].tolist())
    assert {t * N + 5 for t in range(T) if t != T // 2} <= keep
    single = VisualTokens.from_grid(torch.randn(N, D), (1, H, W))
    assert EVAD().compress(single, Budget(tokens=4)).keep.numel() == 4


def test_knob_validation_and_conflicts() -> None:
    with pytest.raises(ValueError, match="keep_rate"):
        EVAD(keep_rate=0.0)
    with pytest.raises(ValueError, match="stages"):
        EVAD(stages=0)
    with pytest.raises(ValueError, match="not both"):
        EVAD(keep_rate=0.7).resolve_budget(Budget(retain=0.25))
    with pytest.raises(ValueError, match="video-level"):
        EVAD().resolve_budget(Budget(retain=0.25, scope="frame"))
