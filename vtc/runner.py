"""Load a local VLM, turn (video, question) into model inputs, and answer: shared by the CLI and evals."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checks import (
    check_attn,
    check_device,
    check_dtype,
    default_model_path,  # noqa: F401  (callers import it from here, beside load_model)
    resolve_local,
)
from .video import DecodedVideo

def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    path: str | Path, device: str | None = "auto", dtype: str = "auto", attn_implementation: str | None = None
) -> tuple[Any, Any]:
    """(model, processor) from a local checkpoint; bf16/fp16 and sdpa/flash-attention pass straight through.

    Every argument is checked before the checkpoint is read, so a typo costs no loading time."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    local = resolve_local(path)
    check_device(device)
    check_dtype(dtype)
    check_attn(attn_implementation)
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(local, local_files_only=True, **kwargs)
    model.to(pick_device(device)).eval()
    processor = AutoProcessor.from_pretrained(local, local_files_only=True)
    return model, processor


def default_sampling(processor: Any) -> tuple[int | None, float | None]:
    """``(num_frames, fps)`` for a video when the user asks for neither: the checkpoint's own choice in
    its video processor config (the shipped model: the 16 frames it was trained on; Qwen3-VL: 2 fps),
    else 1 fps."""
    video_processor = getattr(processor, "video_processor", None)
    num_frames = getattr(video_processor, "num_frames", None)
    if num_frames:
        return int(num_frames), None
    fps = getattr(video_processor, "fps", None)
    return None, float(fps) if fps else 1.0


def build_inputs(processor: Any, videos: list[DecodedVideo], questions: list[str]) -> Any:
    """Prompt(s) with one video each, through the model's own processor (left padding for batches); the
    prompt comes from the processor's chat template (or its family's fallback format, ``patches/``)."""
    from .patches import processor_policy_for

    prompts = processor_policy_for(processor).prompts(questions)
    processor.tokenizer.padding_side = "left"
    return processor(
        text=prompts, videos=[v.frames for v in videos], video_metadata=[v.metadata() for v in videos],
        do_sample_frames=False, padding=True, return_tensors="pt",
    )


def generate_answers(model: Any, processor: Any, inputs: Any, max_new_tokens: int = 16) -> list[str]:
    inputs = inputs.to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]


@dataclass
class PrefillTiming:
    ms: float
    repeats: int


def time_prefill(model: Any, inputs: Any, repeats: int = 3) -> PrefillTiming:
    """Best-of-``repeats`` wall time of one prefill forward (vision encoder included), CUDA-synchronised."""
    inputs = inputs.to(model.device)
    best = float("inf")
    for _ in range(repeats):
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs, use_cache=False, logits_to_keep=1)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        best = min(best, time.perf_counter() - start)
    return PrefillTiming(ms=best * 1000.0, repeats=repeats)
