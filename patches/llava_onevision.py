"""LLaVA-OneVision: SigLIP frames pooled 2x2 (27x27 -> 14x14 = 196 tokens), one newline row per video."""
from __future__ import annotations

import math

from .frame_grid import FrameGridAdapter


class LlavaOnevisionAdapter(FrameGridAdapter):
    """Each video is ``frames x 196`` grid rows then the learned ``image_newline`` row.

    The newline sits on a ``<video>`` placeholder but is not a visual token: vtc keeps it like text.
    The language model (Qwen2) uses 1D RoPE; the engine passes explicit position ids so kept rows
    keep their original ones.
    """

    model_types = ("llava_onevision",)
    vision_refusal = "each frame's projected grid is pooled 2x2 (bilinear) after the tower, so tower tokens are not language-model rows"
    family = "LLaVA-OneVision"
    video_suffix_rows = 1
    known_limits = FrameGridAdapter.known_limits + "; the per-video newline row is always kept"

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)  # bilinear pooling to ceil(n/2)
        return side, side
