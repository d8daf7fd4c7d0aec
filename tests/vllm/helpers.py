"""Requests and engines on the shipped reference model and a small synthetic split."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from vtc.runner import default_model_path

SEED, COUNT = 31337, 8
ENGINE_ARGS = dict(dtype="float32", enforce_eager=True, max_model_len=1024, seed=0, kv_cache_memory_bytes=1 << 28)


def engine(vtc: dict | str | None = None, **kwargs: Any) -> Any:
    from vllm import LLM

    overrides = {} if vtc is None else {"hf_overrides": {"vtc": vtc}}
    return LLM(model=str(default_model_path()), distributed_executor_backend="uni", **ENGINE_ARGS, **overrides, **kwargs)


@lru_cache(maxsize=1)
def split(root: str) -> Path:
    from vtc.synth import make_dataset

    return make_dataset(Path(root), seed=SEED, count=COUNT, progress=False)


def requests(data: Path, processor: Any, noise: int = 0, seed: int = 0) -> tuple[list[dict], list[Any], list[dict]]:
    """vLLM requests (frames plus the metadata transformers gets), the decoded videos, the items.

    ``noise`` adds seeded uniform pixel noise of that amplitude: the synthetic videos are flat colours whose
    many equal tokens make rankings ties, which the last float bits of either vision tower then decide."""
    import numpy as np

    from vtc.patches import processor_policy_for
    from vtc.synth import load_dataset
    from vtc.synth.model import question_text
    from vtc.video import load_video

    items = load_dataset(data)
    videos = [load_video(data / it["video"], num_frames=16) for it in items]
    rng = np.random.default_rng(seed)
    for video in videos if noise else []:
        jitter = rng.integers(-noise, noise + 1, size=video.frames.shape)
        video.frames = np.clip(video.frames.astype(np.int64) + jitter, 0, 255).astype(np.uint8)
    out = []
    for it, video in zip(items, videos):
        md = video.metadata()
        meta = {"total_num_frames": md.total_num_frames, "fps": md.fps, "duration": md.duration,
                "frames_indices": md.frames_indices, "video_backend": md.video_backend, "do_sample_frames": False}
        prompt = processor_policy_for(processor).prompts([question_text(it)])[0]
        out.append({"prompt": prompt, "multi_modal_data": {"video": [(video.frames, meta)]}})
    return out, videos, items
