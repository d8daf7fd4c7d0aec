"""One left-padded batch from per-sample processor outputs.

Several processors cannot batch clips of different lengths (InternVL stacks a batch's videos,
SmolVLM writes the batch's padded frame count into every prompt), yet frame selection gives every
sample its own frame count. Processing each sample alone and padding here keeps each prompt exactly
what the processor writes for that sample.
"""
from __future__ import annotations

from typing import Any

import torch

TEXT_KEYS = ("input_ids", "attention_mask")


def left_pad_collate(samples: list[Any], pad_id: int) -> Any:
    """Concatenate per-sample outputs (each a batch of one prompt) into one left-padded batch.

    Text rows are left-padded. Other tensors are joined along their first dimension when they are
    flat per frame or per patch ([F, C, H, W] frames, [N, D] patches, [1, 3] grids). Per-prompt
    frame stacks ([1, F, ...]) of different lengths are padded with all-zero frames only where the
    model skips such frames (SmolVLM/Idefics mark real frames in ``pixel_attention_mask``); any other
    family would encode a padding frame as a real one, so it gets a clear error instead.
    """
    from transformers import BatchFeature

    length = max(int(s["input_ids"].shape[1]) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=samples[0]["input_ids"].dtype)
    mask = torch.zeros((len(samples), length), dtype=samples[0]["attention_mask"].dtype)
    for b, s in enumerate(samples):
        n = int(s["input_ids"].shape[1])
        ids[b, length - n :], mask[b, length - n :] = s["input_ids"][0], s["attention_mask"][0]
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    keys = [k for k in samples[0].keys() if k not in TEXT_KEYS]
    skips_zero_frames = "pixel_attention_mask" in keys
    for key in keys:
        values = [s[key] for s in samples]
        if not all(isinstance(v, torch.Tensor) for v in values):
            raise ValueError(f"cannot batch the processor output {key!r}: it is not a tensor in every sample")
        batch[key] = _join(key, values, skips_zero_frames)
    return BatchFeature(batch)


def _join(key: str, values: list[torch.Tensor], skips_zero_frames: bool) -> torch.Tensor:
    stacked_per_prompt = values[0].ndim >= 3 and all(v.shape[0] == 1 for v in values)
    if not stacked_per_prompt or len({tuple(v.shape) for v in values}) == 1:
        return torch.cat(values)
    if not skips_zero_frames:
        raise ValueError(
            f"{key!r} stacks each prompt's frames ({[int(v.shape[1]) for v in values]} here) and this family "
            "cannot batch videos with different frame counts: process these samples one at a time"
        )
    frames = max(int(v.shape[1]) for v in values)
    return torch.cat([torch.nn.functional.pad(v, (0, 0) * (v.ndim - 2) + (0, frames - v.shape[1])) for v in values])
