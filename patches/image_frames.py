"""Families that feed each video frame to the LLM as an image: one run of ``image_token_id`` rows per frame.

InternVL and SmolVLM expand a video into ``Frame i: <img>…</img>`` / ``Frame from mm:ss:
<fake><global-img>…<fake>`` blocks. Only the image-token rows are visual; the frame markers, the
image start/end tokens and the newlines between frames are text rows, which vtc never drops.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import FamilyAdapter, VisualLayout


class ImageFramesAdapter(FamilyAdapter):
    """Reads a sample's image-token rows as consecutive frames of one ``frame_grid()`` each.

    Every image in the prompt counts as one frame, in prompt order (several videos continue the
    frame count). A run of image tokens that is not exactly one frame (InternVL's tiled images)
    and runs announced by different tokens (SmolVLM's ``<row_i_col_j>`` tiles next to
    ``<global-img>`` frames) are refused: tiles of one image are not moments in time.

    Token times are frame indices: these models receive no timestamps, only frame markers in text.
    """

    rope = "1d"
    select_stage = "prefill"
    video_encoder = "get_image_features"

    def visual_token_id(self) -> int:
        return int(self.config.image_token_id)

    def frame_pixels(self, captured: dict[str, Any]) -> torch.Tensor | None:
        images = captured.get("pixel_values")
        return None if images is None else images.flatten(0, images.ndim - 4)

    def layouts(self, captured: dict[str, Any], visual_mask: torch.Tensor) -> list[VisualLayout]:
        height, width = self.frame_grid()
        per_frame = height * width
        input_ids = captured["input_ids"].to(visual_mask.device)
        layouts = []
        for sample in range(visual_mask.shape[0]):
            rows = visual_mask[sample].nonzero().flatten()
            runs = _runs(rows)
            lengths = [int(r.numel()) for r in runs]
            if any(n != per_frame for n in lengths):
                raise ValueError(
                    f"sample {sample}: {self.family} frames hold {per_frame} image tokens ({height}x{width}), but the "
                    f"prompt has runs of {sorted(set(lengths))}: a tiled image or a model whose vision config "
                    "disagrees with its processor; vtc will not guess which rows belong to which frame"
                )
            announcers = {int(input_ids[sample, r[0] - 1]) for r in runs if int(r[0]) > 0}
            if len(announcers) > 1:
                raise ValueError(
                    f"sample {sample}: image-token runs are announced by different tokens {sorted(announcers)}: "
                    "the prompt holds the tiles of a split image, not frames; pass images unsplit or leave them out"
                )
            layouts.append(VisualLayout.of_grid(rows, len(runs), height, width))
        return layouts


def _runs(rows: torch.Tensor) -> list[torch.Tensor]:
    """Split sorted row indices into runs of consecutive rows."""
    if rows.numel() == 0:
        return []
    breaks = (rows[1:] != rows[:-1] + 1).nonzero().flatten() + 1
    sizes = torch.diff(torch.cat([breaks.new_zeros(1), breaks, breaks.new_tensor([rows.numel()])]))
    return list(torch.split(rows, sizes.tolist()))
