"""Tests for vtc.synth: determinism, balance, oracle on decoded videos, blank/text-only
baselines at chance, evidence boxes, datasets loading and the CLI."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import pytest

from vtc.synth import (
    CHANCE,
    QUESTION_TYPES,
    load_dataset,
    make_dataset,
    oracle_answer,
    plan_items,
    read_video,
    register_cli,
    render_item,
)
from vtc.synth.dataset import scene_spec
from vtc.synth.oracle import color_labels
from vtc.synth.scenes import MIN_SIZE
from vtc.synth.vocab import COLORS, LETTERS, NUM_OPTIONS, VALUES

SEED = 1234
COUNT = 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "ds", SEED, COUNT, progress=False)


def _rendered(seed: int, count: int) -> list[tuple[np.ndarray, dict]]:
    """Items as make_dataset would produce them, without encoding (fast)."""
    return [
        render_item(p["seed"], p["type"], answer=p["answer"], answer_text=p["answer_text"])
        for p in plan_items(seed, count)
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(dataset: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again", SEED, COUNT, progress=False)
    first, second = _files(dataset), _files(again)
    assert len(first) == COUNT + 1
    assert first == second


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = _files(make_dataset(tmp_path / "other", SEED + 1, 6, progress=False))
    first = _files(dataset)
    assert other["data.jsonl"] != first["data.jsonl"]
    assert all(other[name] != first[name] for name in other if name.endswith(".mp4"))


def test_items_reproduce_from_their_fields(dataset: Path) -> None:
    for item in load_dataset(dataset):
        _, again = render_item(item["seed"], item["type"], answer=item["answer"], answer_text=item["answer_text"])
        assert {"video": item["video"], **again} == item


def test_item_schema(dataset: Path) -> None:
    items = load_dataset(dataset)
    assert len(items) == COUNT
    for i, item in enumerate(items):
        assert item["video"] == f"videos/{i:06d}.mp4" and (dataset / item["video"]).is_file()
        n = NUM_OPTIONS[item["type"]]
        assert item["options"] == [f"{LETTERS[j]}. {o.split('. ', 1)[1]}" for j, o in enumerate(item["options"])]
        assert len(item["options"]) == n and len({o[3:] for o in item["options"]}) == n
        assert item["options"][LETTERS.index(item["answer"])] == f"{item['answer']}. {item['answer_text']}"


def test_every_type_present_and_balanced() -> None:
    items = [item for _, item in _rendered(SEED, COUNT)]
    per_type = collections.Counter(item["type"] for item in items)
    assert per_type == {t: COUNT // len(QUESTION_TYPES) for t in QUESTION_TYPES}
    for qtype in QUESTION_TYPES:
        letters = collections.Counter(item["answer"] for item in items if item["type"] == qtype)
        assert set(letters) == set(LETTERS[: NUM_OPTIONS[qtype]])
        assert max(letters.values()) - min(letters.values()) <= 1
    # Over a larger plan, values are balanced too (counts differ by at most one per type).
    plan = plan_items(SEED, 600)
    for qtype in QUESTION_TYPES:
        values = collections.Counter(p["answer_text"] for p in plan if p["type"] == qtype)
        assert set(values) == set(VALUES[qtype])
        assert max(values.values()) - min(values.values()) <= 1


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_oracle_answers_every_decoded_item(dataset: Path, backend: str) -> None:
    for item in load_dataset(dataset):
        frames = read_video(dataset / item["video"], backend)
        assert frames.shape == (16, 112, 112, 3)
        assert oracle_answer(frames, item) == item["answer"], item


@pytest.fixture(scope="module")
def blank_items() -> list[dict]:
    return [item for _, item in _rendered(SEED + 7, 120)]


@pytest.mark.parametrize("fill", [0, 128])
def test_oracle_at_chance_on_grey_video(blank_items: list[dict], fill: int) -> None:
    blank = np.full((16, 112, 112, 3), fill, np.uint8)
    for qtype in QUESTION_TYPES:
        items = [item for item in blank_items if item["type"] == qtype]
        accuracy = np.mean([oracle_answer(blank, item) == item["answer"] for item in items])
        assert accuracy <= CHANCE[qtype] + 0.05, (qtype, accuracy)


def test_oracle_at_chance_on_coloured_video(blank_items: list[dict]) -> None:
    """A frame-filling palette colour is 'seen' but carries no evidence (colours cycle over items)."""
    items = blank_items[:63]
    hits = []
    for i, item in enumerate(items):
        blank = np.empty((16, 112, 112, 3), np.uint8)
        blank[...] = list(COLORS.values())[i % len(COLORS)]
        hits.append(oracle_answer(blank, item) == item["answer"])
    chance = np.mean([CHANCE[item["type"]] for item in items])
    assert np.mean(hits) <= chance + 0.1, np.mean(hits)


def test_text_only_baselines_at_chance() -> None:
    """Answer priors learnt from question/options text on one dataset do not transfer."""
    train = [item for _, item in _rendered(SEED, 480)]
    test = [item for _, item in _rendered(SEED + 1, 480)]
    letter_prior: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    value_prior: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for item in train:
        letter_prior[item["type"], item["question"]][item["answer"]] += 1
        value_prior[item["type"], item["question"]][item["answer_text"]] += 1
    hits = collections.Counter()
    for item in test:
        key = item["type"], item["question"]
        guess_letter = letter_prior[key].most_common(1)[0][0] if letter_prior[key] else "A"
        options = [o.split(". ", 1)[1] for o in item["options"]]
        guess_value = max(options, key=lambda v: value_prior[key][v])
        hits["letter"] += guess_letter == item["answer"]
        hits["value"] += guess_value == item["answer_text"]
    chance = np.mean([CHANCE[item["type"]] for item in test])
    for name, n in hits.items():
        assert n / len(test) <= chance + 0.06, (name, n / len(test), chance)


def test_evidence_boxes_inside_frame_and_needle_points_at_flash(dataset: Path) -> None:
    for item in load_dataset(dataset):
        assert item["evidence"]
        for t, y0, x0, y1, x1 in item["evidence"]:
            assert 0 <= t < 16 and 0 <= y0 < y1 <= 112 and 0 <= x0 < x1 <= 112
        if item["type"] != "needle":
            continue
        frames = read_video(dataset / item["video"])
        needle = color_labels(frames) == list(COLORS).index(item["answer_text"])
        flash = sorted(int(t) for t in np.flatnonzero(needle.sum((1, 2)) > 50))
        boxes = item["evidence"]
        assert [b[0] for b in boxes] == flash and 1 <= len(flash) <= 2 and flash[0] // 2 == flash[-1] // 2
        for t, y0, x0, y1, x1 in boxes:
            assert needle[t, y0:y1, x0:x1].sum() > 0.9 * needle[t].sum()


def test_datasets_loads_jsonl(dataset: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(dataset / "data.jsonl"), cache_dir=str(tmp_path))["train"]
    assert ds.num_rows == COUNT
    assert {"video", "question", "options", "answer", "type", "seed", "evidence", "answer_text"} <= set(ds.column_names)
    assert ds[0] == load_dataset(dataset)[0]


def test_cli_make_and_extensible(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="vtc")
    commands = parser.add_subparsers(dest="command", required=True)
    synth_commands = register_cli(commands)
    synth_commands.add_parser("extra").set_defaults(handler=lambda args: 0)
    out = tmp_path / "cli"
    args = parser.parse_args(["synth", "make", "--seed", "3", "--count", "6", "--out", str(out), "--quiet"])
    assert args.handler(args) == 0
    assert len(load_dataset(out)) == 6 and len(list((out / "videos").glob("*.mp4"))) == 6
    assert parser.parse_args(["synth", "extra"]).handler(None) == 0


@pytest.mark.parametrize(
    "bad", [dict(qtype="nope"), dict(num_frames=15), dict(size=63), dict(answer="D", qtype="order"), dict(answer_text="up")]
)
def test_render_item_rejects_bad_arguments(bad: dict) -> None:
    kwargs = {"qtype": "detail", **bad}
    with pytest.raises(ValueError):
        render_item(0, **kwargs)


def test_every_type_builds_at_every_even_size_from_the_minimum_to_256_px() -> None:
    """Placement must finish at any allowed size: at 160 px a central detail cell left no room for
    the two large objects and placing them retried forever; below MIN_SIZE a motion path cannot fit."""
    for size in range(MIN_SIZE, 257, 2):
        for qtype in QUESTION_TYPES:
            for seed in range(4):
                spec, _, _ = scene_spec(seed, qtype, size=size)
                for sprite in spec.sprites:
                    assert all(0 <= v and v + sprite.size <= size for pos in sprite.track.values() for v in pos)
    with pytest.raises(ValueError, match="too small"):
        scene_spec(0, "motion", size=MIN_SIZE - 2)
    with pytest.raises(ValueError, match=f">= {MIN_SIZE}"):
        render_item(0, "detail", size=MIN_SIZE - 2)


def test_every_type_renders_and_oracle_answers_at_224_px_and_32_frames() -> None:
    """Objects grow with the frame: at 224 px they are wider than one 28 px merged token, so the
    detail object and the count blinker are centred in a cell of whole tokens that holds them."""
    for qtype in QUESTION_TYPES:
        for seed in range(3):
            frames, item = render_item(seed, qtype, num_frames=32, size=224)
            assert frames.shape == (32, 224, 224, 3)
            assert oracle_answer(frames, item) == item["answer"], item


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"video": "videos/x.mp4", "question": ', "not valid JSON"),
        ('["a", "list"]', "expected a JSON object per line, got list"),
        ('{"video": "videos/x.mp4", "question": "Q?", "options": ["A. red"]}', "lacks ['answer', 'answer_text']"),
    ],
)
def test_a_bad_data_jsonl_line_names_the_file_and_line(dataset: Path, tmp_path: Path, bad_line: str, message: str) -> None:
    lines = (dataset / "data.jsonl").read_text().splitlines()[:3]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join([lines[0], "", lines[1], bad_line, lines[2]]) + "\n")  # the bad line is line 4
    with pytest.raises(ValueError) as info:
        load_dataset(tmp_path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{jsonl}:4: ")
