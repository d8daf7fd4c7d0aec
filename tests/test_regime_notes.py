"""Stats notes where a method leaves the regime its paper describes (as DyCoke notes a budget below its floor).

Each note is checked both ways: present exactly when the condition holds, and saying what is true of the
kept tokens. 128 tokens (8 x 4x4) is the size the synthetic benchmark runs at; 3,136 (16 x 14x14) is a
realistic one where the same budgets stay in the regime.
"""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc import Budget
from vtc.methods.fastvid import PRESETS, FastVID, fastvid_select

from .builders import tiny, video
from .video_like import SIZES, video_tokens


@pytest.mark.parametrize("size", [128, 3136])
@pytest.mark.parametrize("retain", [0.5, 0.25, 0.1, 0.05])
def test_dtd_notes_a_budget_below_one_frame_and_keeps_only_that_frame(size: int, retain: float) -> None:
    tokens = video_tokens(*SIZES[size])
    per_frame = size // SIZES[size][0]
    selection = vtc.get_method("dtd")().compress(tokens, Budget(retain=retain))
    below = Budget(retain=retain).count(size) < per_frame
    notes = [note for note in selection.notes if "no change is seen" in note]
    assert bool(notes) == below
    if below:
        assert bool((tokens.frame[selection.keep] == 0).all()), "all kept tokens come from the first frame"
        assert f"below the {per_frame} tokens" in notes[0]


def test_dtd_note_reaches_the_stats_through_wrap() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "dtd", retain=0.05), torch.no_grad():
        tm.model(**inputs)
        notes = [note for record in tm.model.vtc_stats.stages for note in record.notes]
    assert any("no change is seen" in note for note in notes), notes


def _fastvid_plan(size: int, retain: float):
    tokens = video_tokens(*SIZES[size])
    frames, side = SIZES[size]
    knobs = {k: v for k, v in PRESETS["qwen"].items() if k != "retention_ratio"}
    knobs["dyseg_c"] = min(knobs["dyseg_c"], frames)
    result = fastvid_select(tokens.features.view(frames, side * side, -1), tokens.vision_saliency.view(frames, -1),
                            retention_ratio=retain, count=Budget(retain=retain).count(size), **knobs)
    selection = FastVID().compress(tokens, Budget(retain=retain))
    return result, selection


@pytest.mark.parametrize("size", [128, 3136])
@pytest.mark.parametrize("retain", [0.25, 0.1, 0.05])
def test_fastvid_notes_segments_without_a_salient_token(size: int, retain: float) -> None:
    result, selection = _fastvid_plan(size, retain)
    count, frames = Budget(retain=retain).count(size), SIZES[size][0]
    ends = torch.cumsum(result.segment_sizes, 0).tolist()
    shares = [b - a for a, b in zip([0, *[count * e // frames for e in ends[:-1]]], [count * e // frames for e in ends])]
    empty = sum(share - max(int(share * 0.4), 1) <= 0 for share in shares)  # all of it context (d=0.4), or nothing
    notes = [note for note in selection.notes if "keep no salient token" in note]
    assert bool(notes) == bool(empty)
    if notes:
        assert notes[0].startswith(f"{empty} of {len(shares)} DySeg segment(s)")
    assert bool(notes) == (size == 128 and retain <= 0.1), "at 16 tokens per frame r=0.1 leaves one token per frame"


@pytest.mark.parametrize("size", [128, 3136])
@pytest.mark.parametrize("retain", [0.25, 0.1, 0.05])
def test_fastvid_notes_when_retain_is_not_its_per_frame_r(size: int, retain: float) -> None:
    _, selection = _fastvid_plan(size, retain)
    per_frame = size // SIZES[size][0]
    floored = int(per_frame * retain)
    notes = [note for note in selection.notes if "FastVID's r keeps" in note]
    assert bool(notes) == (floored < 0.95 * per_frame * retain)
    if notes:
        assert f"int({per_frame}*r) = {floored} per frame" in notes[0]


@pytest.mark.parametrize("size", [128, 3136])
@pytest.mark.parametrize("retain", [0.25, 0.1])
def test_fastvid_notes_a_context_share_far_from_d(size: int, retain: float) -> None:
    result, selection = _fastvid_plan(size, retain)
    share = int(result.frame_context_num.sum()) / result.kept_idx.numel()
    notes = [note for note in selection.notes if "context anchors are" in note]
    assert bool(notes) == (abs(share - 0.4) > 0.1)
    if notes:
        assert notes[0].startswith(f"context anchors are {share:.0%} of the {result.kept_idx.numel()} kept tokens")
    if size == 128 and retain == 0.1:
        assert notes, "13 tokens over 8 one-frame segments: one anchor each is 62%, not 40%"
