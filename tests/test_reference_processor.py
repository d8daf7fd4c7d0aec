"""The shipped processor's per-frame pixel cap (224 x 224 since issue 19) lets the scale tier's frames
through and gives the fast tier exactly the input, and so the logits, it had under the old 112 x 112 cap."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vtc.runner import build_inputs, default_model_path, load_model
from vtc.synth import TIERS, load_dataset, make_dataset
from vtc.synth.model import question_text
from vtc.video import load_video

OLD_CAP = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}  # the cap the shipped model was first trained under


def _old_processor():
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(default_model_path())
    processor.video_processor = type(processor.video_processor).from_pretrained(default_model_path(), size=OLD_CAP)
    return processor


def _inputs(processor, root: Path, num_frames: int):
    items = load_dataset(root)
    videos = [load_video(root / it["video"], num_frames=num_frames) for it in items]
    return build_inputs(processor, videos, [question_text(it) for it in items])


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return load_model(default_model_path(), device="cpu")


@pytest.mark.parametrize("tier", ["fast", "scale"])
def test_pixel_cap_passes_each_tier_at_its_own_size(tmp_path: Path, reference, tier: str) -> None:
    spec = TIERS[tier]
    root = make_dataset(tmp_path / tier, seed=5, count=2, num_frames=spec.num_frames, size=spec.size, progress=False)
    _, processor = reference
    grid = _inputs(processor, root, spec.num_frames)["video_grid_thw"]
    side = spec.size // 14
    assert grid.tolist() == [[spec.num_frames // 2, side, side]] * 2
    old_grid = _inputs(_old_processor(), root, spec.num_frames)["video_grid_thw"]
    assert old_grid.tolist() == [[spec.num_frames // 2, 8, 8]] * 2  # the old cap shrank every frame to 112 px


def test_fast_tier_logits_are_those_of_the_old_cap(tmp_path: Path, reference) -> None:
    model, processor = reference
    root = make_dataset(tmp_path / "fast", seed=11, count=6, progress=False)
    new, old = _inputs(processor, root, 16), _inputs(_old_processor(), root, 16)
    assert set(new) == set(old)
    for key in new:
        assert torch.equal(new[key], old[key]), key
    with torch.no_grad():
        assert torch.equal(model(**new).logits, model(**old).logits)
