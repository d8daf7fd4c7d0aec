"""Where ``vtc_videomme`` finds its videos: a local directory instead of ``$HF_HOME/videomme``.

lmms-eval's own ``videomme_doc_to_visual`` exits the process when a video is missing; this one
raises a FileNotFoundError naming the file, so the run fails with a clear error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

TASK_DIR = Path(__file__).resolve().parent
SUFFIXES = (".mp4", ".MP4", ".mkv")


def doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> list[str]:
    root = Path((lmms_eval_specific_kwargs or {}).get("video_dir", "data/data")).expanduser()
    root = root if root.is_absolute() else TASK_DIR / root
    for suffix in SUFFIXES:
        path = root / f"{doc['videoID']}{suffix}"
        if path.is_file():
            return [str(path)]
    raise FileNotFoundError(f"vtc_videomme: no video {doc['videoID']}(.mp4|.MP4|.mkv) in {root}; set video_dir")
