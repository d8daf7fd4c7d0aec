"""lmms-eval hooks for the ``vtc_synth`` task: the prompt the reference model was trained on, and scoring.

``data_dir`` (from the yaml's ``lmms_eval_specific_kwargs``) is the directory ``vtc synth make`` wrote;
a relative one is taken relative to this task's directory, because lmms-eval gives task functions no
other anchor (it resolves relative ``data_files`` against the yaml, but not free-form paths).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vtc.synth.model import parse_answer, question_text

TASK_DIR = Path(__file__).resolve().parent


def video_path(doc: dict[str, Any], data_dir: str | Path) -> Path:
    """The item's mp4, or a FileNotFoundError that says how to make the data."""
    root = Path(data_dir).expanduser()
    root = root if root.is_absolute() else TASK_DIR / root
    path = root / doc["video"]
    if not path.is_file():
        raise FileNotFoundError(
            f"vtc_synth: video {path} is missing. Render the dataset with "
            f"`vtc synth make --seed SEED --count N --out {root}` or point data_dir at the directory it wrote"
        )
    return path


def doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> list[str]:
    data_dir = (lmms_eval_specific_kwargs or {}).get("data_dir", "data")
    return [str(video_path(doc, data_dir))]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return question_text(doc)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the reply names the right option (by its word or its letter), else 0.0."""
    return {"accuracy": float(parse_answer(results[0], doc["options"]) == doc["answer"])}
