"""Synthetic data and task/suite files for the lmms-eval tests (written under a pytest tmp dir)."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SYNTH_TASK = REPO / "eval" / "tasks" / "vtc_synth" / "vtc_synth.yaml"


def synth_task(directory: Path, data: Path, name: str = "vtc_synth_test") -> Path:
    """A task yaml that ``include:``s the shipped vtc_synth task and points it at ``data``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "include": str(SYNTH_TASK),
        "task": name,
        "dataset_kwargs": {"data_files": {"test": str(data / "data.jsonl")}},
        "lmms_eval_specific_kwargs": {"default": {"data_dir": str(data)}},
    }))
    return path


def suite_file(path: Path, tasks_dir: Path, **overrides) -> Path:
    suite = {
        "model": "vtc", "model_args": {"num_frames": 16, "device": "cpu"}, "tasks": ["vtc_synth_test"],
        "include_path": [str(tasks_dir)], "methods": ["dtd", "fastv"], "budgets": [0.5, 0.25],
        "batch_size": 6, "output": "out/sweep",
    }
    suite.update(overrides)
    path.write_text(yaml.safe_dump(suite))
    return path
