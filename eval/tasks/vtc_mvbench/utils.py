"""Where ``vtc_mvbench_*`` find their videos: a local MVBench ``video/`` directory instead of ``$HF_HOME``.

The sub-task -> folder map is lmms-eval's own (``DATA_LIST``), so the layout is the official one.
A missing video raises a FileNotFoundError (lmms-eval's version logs and goes on with a bad path).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lmms_eval.tasks.mvbench.utils import DATA_LIST

TASK_DIR = Path(__file__).resolve().parent


def doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> list[str]:
    kwargs = lmms_eval_specific_kwargs or {}
    root = Path(kwargs.get("video_dir", "data/video")).expanduser()
    root = root if root.is_absolute() else TASK_DIR / root
    folder = root / DATA_LIST[kwargs["sub_task"]]
    for path in (folder / doc["video"], root / "data0613" / DATA_LIST[kwargs["sub_task"]] / doc["video"]):
        if path.exists():
            return [str(path)]
    raise FileNotFoundError(f"vtc_mvbench: video {folder / doc['video']} does not exist; set video_dir")
