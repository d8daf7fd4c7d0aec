"""LLaVA-NeXT-Video: CLIP frames without [CLS], average-pooled 2x2 (24x24 -> 12x12 = 144 tokens per frame)."""
from __future__ import annotations

from .frame_grid import FrameGridAdapter


class LlavaNextVideoAdapter(FrameGridAdapter):
    """Each video is ``frames x 144`` grid rows and nothing else; the Llama/Mistral/Qwen2 LM uses 1D RoPE.

    The pooler floors (``AvgPool2d``/``MaxPool2d``/strided conv with ``spatial_pool_stride``), so the
    grid side is ``(image_size // patch_size) // stride``. Video features always drop the [CLS]
    (``vision_feature_select_strategy="default"``); with "full" the model itself cannot pool them.
    """

    model_types = ("llava_next_video",)
    vision_refusal = "the tower's patch grid is average-pooled 2x2 after the [CLS] is removed, so tower tokens are not language-model rows"
    family = "LLaVA-NeXT-Video"

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = (vision.image_size // vision.patch_size) // int(self.config.spatial_pool_stride)
        return side, side
