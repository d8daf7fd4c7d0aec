"""LLaVA-OneVision: SigLIP frames pooled 2x2 (27x27 -> 14x14 = 196 tokens), one newline row per video."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

from .projector_cut import bilinear_pool
from .frame_grid import FrameGridAdapter


class LlavaOnevisionAdapter(FrameGridAdapter):
    """Each video is ``frames x 196`` grid rows then the learned ``image_newline`` row.

    The newline sits on a ``<video>`` placeholder but is not a visual token: vtc keeps it like text.
    The language model (Qwen2) uses 1D RoPE; the engine passes explicit position ids so kept rows
    keep their original ones.
    """

    model_types = ("llava_onevision",)
    vision_stage = "pooled rows"
    family = "LLaVA-OneVision"
    video_suffix_rows = 1
    known_limits = FrameGridAdapter.known_limits + "; the per-video newline row is always kept"

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """VisionZip on the pooled rows the language model receives: SigLIP has no [CLS], so dominance is the
        frame's mean-query attention at the feature layer; it and the keys are resized to the pooled grid by the
        same bilinear interpolation as the features. Deviation: merging happens after the projector and the
        pooling (on language-model inputs), since only there do the rows exist."""
        height, width = self.frame_grid()
        pool = functools.partial(bilinear_pool, height=height, width=width)
        return self.clip_projector_cut(stage, self.base_model().vision_tower, pool=pool, cls_row=False,
                                       tower_cls=False, after="apply_pooling")

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)  # bilinear pooling to ceil(n/2)
        return side, side
