"""Build and load the synthetic video-QA dataset (``data.jsonl`` + ``videos/*.mp4``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..checks import at_least, check_output_dir, positive
from .render import render_frames
from .scenes import BUILDERS, MIN_SIZE, SceneSpec
from .video_io import write_mp4
from .vocab import LETTERS, NUM_OPTIONS, QUESTION_TYPES, VALUES

# SeedSequence tags keep the three seed streams (item seeds, letter and value schedules)
# independent of each other.
_ITEM, _LETTER, _VALUE = 0, 1, 2


def item_seed(dataset_seed: int, index: int) -> int:
    """Seed of item ``index``: a pure function of the dataset seed and the index."""
    return int(np.random.SeedSequence([dataset_seed, _ITEM, index]).generate_state(1)[0])


def _balanced(rng: np.random.Generator, values: Sequence[str], k: int) -> list[str]:
    """``k`` values made of concatenated random permutations, so counts differ by at most 1."""
    out: list[str] = []
    while len(out) < k:
        out += [str(v) for v in rng.permutation(list(values))]
    return out[:k]


def plan_items(seed: int, count: int, types: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Seed, type, answer letter and answer value of each item. Types cycle so each is equally
    frequent; within a type, letters and values are balanced separately, so a model that
    ignores the video is at chance."""
    types = list(types or QUESTION_TYPES)
    unknown = set(types) - set(QUESTION_TYPES)
    if unknown:
        raise ValueError(f"unknown question types {sorted(unknown)}; choose from {QUESTION_TYPES}")
    per_type = [len(range(i, count, len(types))) for i in range(len(types))]
    letters = {
        t: _balanced(np.random.default_rng([seed, _LETTER, QUESTION_TYPES.index(t)]), LETTERS[: NUM_OPTIONS[t]], n)
        for t, n in zip(types, per_type)
    }
    values = {
        t: _balanced(np.random.default_rng([seed, _VALUE, QUESTION_TYPES.index(t)]), VALUES[t], n)
        for t, n in zip(types, per_type)
    }
    plan = []
    for i in range(count):
        t, k = types[i % len(types)], i // len(types)
        plan.append({"seed": item_seed(seed, i), "type": t, "answer": letters[t][k], "answer_text": values[t][k]})
    return plan


def check_frames(num_frames: int, size: int) -> None:
    """Frame count and side every scene can be rendered at."""
    if num_frames < 16 or num_frames % 2:
        raise ValueError(f"num_frames must be even and >= 16 (events are placed on frame pairs), got {num_frames!r}")
    if size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be even (yuv420) and >= {MIN_SIZE} (a motion clip's path must fit in the frame), "
                         f"got {size!r}")


def render_item(
    seed: int,
    qtype: str,
    *,
    answer: str | None = None,
    answer_text: str | None = None,
    num_frames: int = 16,
    size: int = 112,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one item without touching files: uint8 frames [T, H, W, 3] and the item dict.

    ``answer`` (letter) and ``answer_text`` (value) are drawn from the seed when omitted;
    ``render_item(it["seed"], it["type"], answer=it["answer"], answer_text=it["answer_text"])``
    reproduces a dataset item exactly.
    """
    check_frames(num_frames, size)
    spec, letter, value = scene_spec(seed, qtype, answer, answer_text, num_frames, size)
    frames, evidence = render_frames(spec, num_frames, size)
    item = {
        "type": qtype,
        "question": spec.question,
        "options": [f"{LETTERS[i]}. {v}" for i, v in enumerate(spec.option_values)],
        "answer": letter,
        "answer_text": value,
        "seed": int(seed),
        "evidence": evidence,
    }
    return frames, item


def scene_spec(
    seed: int, qtype: str, answer: str | None = None, answer_text: str | None = None,
    num_frames: int = 16, size: int = 112,
) -> tuple[SceneSpec, str, str]:
    """The scene an item is rendered from, with its answer letter and value (drawn from the seed when omitted).

    Training code uses it to know what was drawn where, without re-rendering pixels.
    """
    if qtype not in BUILDERS:
        raise ValueError(f"unknown question type {qtype!r}; choose from {QUESTION_TYPES}")
    rng = np.random.default_rng(seed)
    n_options = NUM_OPTIONS[qtype]
    letter = answer if answer is not None else LETTERS[int(rng.integers(n_options))]
    if letter not in LETTERS[:n_options]:
        raise ValueError(f"answer {letter!r} is not one of {LETTERS[:n_options]!r} for {qtype}")
    value = answer_text if answer_text is not None else str(rng.choice(VALUES[qtype]))
    if value not in VALUES[qtype]:
        raise ValueError(f"answer_text {value!r} is not a {qtype} value {VALUES[qtype]}")
    return BUILDERS[qtype](rng, num_frames, size, LETTERS.index(letter), value), letter, value


def make_dataset(
    out_dir: str | Path,
    seed: int,
    count: int,
    num_frames: int = 16,
    size: int = 112,
    fps: float = 4.0,
    types: Sequence[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``count`` items to ``out_dir/videos/NNNNNN.mp4`` and ``out_dir/data.jsonl``.
    Same arguments give byte-identical files. Returns ``out_dir``.

    Every argument is checked before anything is written. A dataset already in ``out_dir`` is refused
    unless ``overwrite``, which first removes its data.jsonl and videos (a smaller count would
    otherwise leave stale videos beside the new data.jsonl)."""
    at_least("count", count, 1)
    check_frames(num_frames, size)
    positive("fps", fps)
    plan = plan_items(seed, count, types)
    out = check_output_dir(out_dir, "output directory")
    old = [out / "data.jsonl", *sorted((out / "videos").glob("*.mp4"))]
    old = [path for path in old if path.is_file()]
    if old and not overwrite:
        raise ValueError(f"{out} already holds a dataset ({len(old)} files); choose another directory "
                         "or pass --overwrite to replace it")
    for path in old:
        path.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, p in enumerate(tqdm(plan, desc="synth", disable=not progress)):
        frames, item = render_item(
            p["seed"], p["type"], answer=p["answer"], answer_text=p["answer_text"], num_frames=num_frames, size=size
        )
        video = f"videos/{i:06d}.mp4"
        write_mp4(out / video, frames, fps)
        lines.append(json.dumps({"video": video, **item}))
    tmp = out / "data.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out / "data.jsonl")
    return out


ITEM_KEYS = ("video", "question", "options", "answer", "answer_text")
"""Keys every item needs: what evaluation and training read."""


def load_dataset(path: str | Path) -> list[dict[str, Any]]:
    """Items of a dataset directory (or its ``data.jsonl``); ``video`` stays relative to the directory.

    A bad line fails with the file and its 1-based line number, so a hand-edited file is quick to fix.
    """
    path = Path(path)
    jsonl = path / "data.jsonl" if path.is_dir() else path
    if not jsonl.is_file():
        raise FileNotFoundError(f"{path} is not a `vtc synth make` dataset (no data.jsonl)" if path.is_dir()
                                else f"dataset {str(path)!r} does not exist")
    return [_item(jsonl, number, line) for number, line in enumerate(jsonl.read_text().splitlines(), 1) if line.strip()]


def _item(jsonl: Path, number: int, line: str) -> dict[str, Any]:
    """One line of ``jsonl`` as an item, or a ValueError naming the file and line."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{jsonl}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(item, dict):
        raise ValueError(f"{jsonl}:{number}: expected a JSON object per line, got {type(item).__name__}")
    missing = [key for key in ITEM_KEYS if key not in item]
    if missing:
        raise ValueError(f"{jsonl}:{number}: the item lacks {missing}; every item needs {', '.join(ITEM_KEYS)}")
    return item
