"""Where each visual token sits in the frames the processor received: the family adapter's (t, h, w)
layout, scaled onto the part of the frame the processor kept (its resize, and its centre crop if any)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TokenCells:
    """One sample's original visual tokens as pixel rectangles.

    group:  [N] frame group of each token (the layout's t; Qwen: 2 frames per group).
    box:    [N, 4] (y0, x0, y1, x1) half-open rectangle in source-frame pixels (floats).
    frames_per_group: source frames per group; group g covers frames g*k .. g*k+k-1.
    num_groups: groups in the token grid (T), including groups with no token left (VideoLLaMA3).
    """

    group: np.ndarray
    box: np.ndarray
    frames_per_group: int
    num_groups: int

    def __len__(self) -> int:
        return int(self.group.shape[0])


def visible_region(processor: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of a height x width source frame that reaches the model.

    Processors that resize the shortest edge and then centre-crop (LLaVA-NeXT-Video, Video-LLaVA)
    show the model only the middle; every other supported processor resizes the whole frame.
    """
    video = getattr(processor, "video_processor", None) or getattr(processor, "image_processor", None)
    crop = getattr(video, "crop_size", None)
    if video is None or not getattr(video, "do_center_crop", False) or crop is None:
        return 0.0, 0.0, float(height), float(width)
    shortest = getattr(video.size, "shortest_edge", None)
    scale = shortest / min(height, width) if shortest else min(video.size.height / height, video.size.width / width)
    crop_h, crop_w = min(crop.height / scale, height), min(crop.width / scale, width)
    top, left = (height - crop_h) / 2.0, (width - crop_w) / 2.0
    return top, left, top + crop_h, left + crop_w


def token_cells(model: Any, processor: Any, inputs: Any, num_frames: int, frame_size: tuple[int, int],
                sample: int = 0) -> TokenCells:
    """Cells of sample ``sample``'s visual tokens, from the adapter's layout of the model ``inputs``.

    ``num_frames`` and ``frame_size`` (height, width) describe the frames the processor received.
    """
    import torch

    from ..patches import adapter_for

    adapter = adapter_for(model)
    input_ids = inputs["input_ids"]
    placeholders = input_ids == adapter.visual_token_id()
    if inputs.get("attention_mask") is not None:
        placeholders &= inputs["attention_mask"].bool()
    captured = {key: value for key, value in dict(inputs).items() if value is not None}
    with torch.no_grad():
        layout = adapter.layouts(captured, placeholders)[sample]
    groups, rows, cols = layout.grid
    if groups == 0 or num_frames % groups:
        raise ValueError(f"{num_frames} frames do not split into the {groups} frame groups of the token grid")
    top, left, bottom, right = visible_region(processor, *frame_size)
    cell_h, cell_w = (bottom - top) / rows, (right - left) / cols
    coords = layout.coords.cpu().numpy().astype(np.float64)
    box = np.stack([top + coords[:, 1] * cell_h, left + coords[:, 2] * cell_w,
                    top + (coords[:, 1] + 1) * cell_h, left + (coords[:, 2] + 1) * cell_w], axis=1)
    return TokenCells(group=coords[:, 0].astype(np.int64), box=box, frames_per_group=num_frames // groups,
                      num_groups=groups)
