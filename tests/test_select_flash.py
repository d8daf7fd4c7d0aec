"""Key-clip selectors at a tight budget: a 64-frame, 224 px synthetic video in which an object flashes in frames 37-38.

At retain 0.125 the selectors can afford 4 of the 32 frame groups (temporal pairs). Uniform sampling misses
the flash; a selector that finds where something happens must not. The video is rendered by the
synthetic benchmark's renderer (static textured background, two static objects, one object moving
steadily, the flash); thumbnails are each 28 px token cell's mean colour, as the wrap path scores them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vtc
from vtc import Budget
from vtc.select import Frames, UnitCost
from vtc.synth.render import render_frames
from vtc.synth.scenes import Background, SceneSpec, Sprite

FRAMES, SIZE, CELL = 64, 224, 28
FLASH = (37, 38)


def _flash_video() -> np.ndarray:
    static = {t: (20, 20) for t in range(FRAMES)}
    sprites = [
        Sprite("square", "red", 36, static),
        Sprite("circle", "blue", 36, {t: (150, 30) for t in range(FRAMES)}),
        Sprite("triangle", "green", 22, {t: (100, 10 + 3 * t) for t in range(FRAMES)}),  # moves 3 px a frame
        Sprite("circle", "yellow", 36, {t: (40, 150) for t in FLASH}, True),
    ]
    spec = SceneSpec("What flashed?", ["yellow", "red"], 0, [(0, Background(120.0, (1.0, 0.98, 1.02), "noise", 3))],
                     sprites)
    frames, evidence = render_frames(spec, FRAMES, SIZE)
    assert sorted({box[0] for box in evidence}) == list(FLASH)
    return frames


@pytest.fixture(scope="module")
def frames() -> Frames:
    video = torch.from_numpy(_flash_video()).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
    cells = torch.nn.functional.avg_pool2d(video, CELL)  # [T, 3, 8, 8]: each token cell's mean colour
    thumbs = cells.view(FRAMES // 2, 2, 3, SIZE // CELL, SIZE // CELL)
    units = thumbs.shape[0]
    # A relevance scorer that sees the flash (the question names its colour): how yellow a group is, plus a constant.
    yellowness = (torch.minimum(thumbs[:, :, 0], thumbs[:, :, 1]) - thumbs[:, :, 2]).clamp(min=0).mean(dim=(1, 2, 3))
    features = torch.stack([yellowness, torch.full_like(yellowness, 0.01)], dim=1)
    query = torch.tensor([1.0, 0.0])
    return Frames(thumbs=thumbs, times=torch.arange(units, dtype=torch.float32), indices=torch.arange(FRAMES).view(units, 2),
                  keyframe=torch.zeros(units, dtype=torch.bool), features=features, query=query)


def _kept_frames(spec: str, frames: Frames, shares: bool) -> list[int]:
    method = vtc.Pipeline.parse(spec).steps[0].method
    per_unit = (SIZE // CELL) ** 2
    plan = method.plan(frames, method.resolve_budget(Budget(retain=0.125)), UnitCost(lambda s: per_unit, shares=shares))
    assert plan.keep.numel() * per_unit <= Budget(retain=0.125).count(len(frames) * per_unit) or plan.share is not None
    return [2 * unit + sub for unit in plan.keep.tolist() for sub in (0, 1)]


@pytest.mark.parametrize("shares", [True, False], ids=["wrap", "processor"])
@pytest.mark.parametrize("spec", ["keyframes", "keyclips(relevance=novelty)", "scenes", "keyclips", "query"])
def test_selector_keeps_the_flash(frames: Frames, spec: str, shares: bool) -> None:
    kept = _kept_frames(spec, frames, shares)
    assert set(FLASH) & set(kept), f"{spec} kept frames {kept}, missing the flash in {FLASH}"


def test_uniform_sampling_misses_it(frames: Frames) -> None:
    """The control: at this budget evenly spaced groups fall beside the flash."""
    assert not set(FLASH) & set(_kept_frames("uniform-frames", frames, shares=False))


def test_novelty_anchor_lands_on_the_most_novel_group_not_on_frame_0(frames: Frames) -> None:
    method = vtc.Pipeline.parse("keyclips(relevance=novelty)").steps[0].method
    relevance = method.relevance_scores(frames)
    assert int(relevance.argmax()) in (FLASH[0] // 2, FLASH[1] // 2), "frame 37 (the flash appears) or 39 (it is gone)"
    assert float(relevance[0]) < float(relevance.max())


def test_scenes_cut_at_the_least_similar_transitions(frames: Frames) -> None:
    method = vtc.Pipeline.parse("scenes").steps[0].method
    starts = method.boundaries(frames, 3)
    assert starts == [0, FLASH[0] // 2, FLASH[1] // 2 + 1], "the flash's start and end are the two largest changes"
