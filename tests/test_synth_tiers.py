"""The synthetic benchmark's named tiers: the scale tier (224 px, 32 frames) renders every question type
through the real encode/decode round trip, the oracle answers it, and the shipped processor turns it
into the 1,024 visual tokens the tier promises."""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import pytest

from vtc.runner import build_inputs, default_model_path
from vtc.synth import QUESTION_TYPES, TIERS, get_tier, load_dataset, make_dataset, oracle_answer, read_video, register_cli
from vtc.synth.model import question_text
from vtc.video import load_video

SCALE = TIERS["scale"]
COUNT = 18  # three items per type


@pytest.fixture(scope="module")
def scale_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("scale") / "ds", seed=77, count=COUNT, num_frames=SCALE.num_frames,
                        size=SCALE.size, progress=False)


def test_tiers_name_their_sizes_and_token_counts() -> None:
    assert (TIERS["fast"].size, TIERS["fast"].num_frames, TIERS["fast"].visual_tokens) == (112, 16, 128)
    assert (SCALE.size, SCALE.num_frames, SCALE.visual_tokens) == (224, 32, 1024)
    with pytest.raises(ValueError, match="fast, scale"):
        get_tier("huge")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_oracle_answers_every_type_at_the_scale_tier(scale_dataset: Path, backend: str) -> None:
    items = load_dataset(scale_dataset)
    assert collections.Counter(item["type"] for item in items) == {t: COUNT // len(QUESTION_TYPES) for t in QUESTION_TYPES}
    for item in items:
        frames = read_video(scale_dataset / item["video"], backend)
        assert frames.shape == (SCALE.num_frames, SCALE.size, SCALE.size, 3)
        assert oracle_answer(frames, item) == item["answer"], item
        for frame, y0, x0, y1, x1 in item["evidence"]:
            assert 0 <= frame < SCALE.num_frames and 0 <= y0 < y1 <= SCALE.size and 0 <= x0 < x1 <= SCALE.size


def test_shipped_processor_gives_the_scale_tier_its_token_count(scale_dataset: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(default_model_path())
    items = load_dataset(scale_dataset)[:2]
    videos = [load_video(scale_dataset / it["video"], num_frames=SCALE.num_frames) for it in items]
    grid = build_inputs(processor, videos, [question_text(it) for it in items])["video_grid_thw"]
    merged = [int(t * h * w) // 4 for t, h, w in grid.tolist()]
    assert merged == [SCALE.visual_tokens] * 2


def _synth_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtc")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_make_renders_a_named_tier_and_refuses_a_conflicting_size(tmp_path: Path) -> None:
    parser = _synth_parser()
    args = parser.parse_args(["synth", "make", "--seed", "3", "--count", "2", "--tier", "scale", "--out",
                              str(tmp_path / "scale"), "--quiet"])
    assert args.handler(args) == 0
    item = load_dataset(tmp_path / "scale")[0]
    assert read_video(tmp_path / "scale" / item["video"]).shape == (32, 224, 224, 3)
    args = parser.parse_args(["synth", "make", "--seed", "3", "--count", "2", "--out", str(tmp_path / "fast"), "--quiet"])
    assert args.handler(args) == 0
    assert read_video(tmp_path / "fast" / load_dataset(tmp_path / "fast")[0]["video"]).shape == (16, 112, 112, 3)
    args = parser.parse_args(["synth", "make", "--seed", "3", "--count", "2", "--tier", "scale", "--size", "112",
                              "--out", str(tmp_path / "both"), "--quiet"])
    with pytest.raises(ValueError, match="--size and --tier"):
        args.handler(args)
    assert not (tmp_path / "both").exists()
