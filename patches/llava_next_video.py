"""LLaVA-NeXT-Video: CLIP frames without [CLS], average-pooled 2x2 (24x24 -> 12x12 = 144 tokens per frame)."""
from __future__ import annotations

import functools
from typing import Any, Callable

from .projector_cut import pool_blocks
from .frame_grid import FrameGridAdapter


class LlavaNextVideoAdapter(FrameGridAdapter):
    """Each video is ``frames x 144`` grid rows and nothing else; the Llama/Mistral/Qwen2 LM uses 1D RoPE.

    The pooler floors (``AvgPool2d``/``MaxPool2d``/strided conv with ``spatial_pool_stride``), so the
    grid side is ``(image_size // patch_size) // stride``. Video features always drop the [CLS]
    (``vision_feature_select_strategy="default"``); with "full" the model itself cannot pool them.
    """

    model_types = ("llava_next_video",)
    vision_stage = "projector"
    family = "LLaVA-NeXT-Video"

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """VisionZip on the projector's input, after the pooler: the [CLS] attention and keys read at the feature
        layer are summed / averaged over the patches each pooled row comes from."""
        if self.config.vision_feature_select_strategy != "default":
            raise ValueError("the vision stage needs vision_feature_select_strategy='default' (the model pools without the [CLS])")
        height, width = self.frame_grid()
        pool = functools.partial(pool_blocks, height=height, width=width)
        return self.clip_projector_cut(stage, self.base_model().vision_tower, pool=pool, cls_row=False)

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = (vision.image_size // vision.patch_size) // int(self.config.spatial_pool_stride)
        return side, side
