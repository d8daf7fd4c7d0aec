"""Video-LLaVA: CLIP frames with their [CLS] (16x16 + 1 = 257 rows per frame) and a real [CLS] attention."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .projector_cut import cls_attention_and_keys
from .frame_grid import FrameGridAdapter


class VideoLlavaAdapter(FrameGridAdapter):
    """Each frame is its [CLS] row then the 16x16 patch grid; the Llama LM uses 1D RoPE.

    The [CLS] rows enter the LLM but are not visual tokens of the grid: vtc keeps them like text.
    The video tower has a real [CLS], so the ViT saliency handed to methods that need one
    (``needs={"vision_saliency"}``: FastVID's ATS, HoliTom) is the [CLS] query's head-averaged
    softmax attention over the frame's patches, at the encoder layer whose output becomes the video
    features, instead of the pseudo-[CLS] (mean query) reading used for towers without one.
    """

    model_types = ("video_llava",)
    family = "Video-LLaVA"
    frame_prefix_rows = 1
    vision_stage = "projector"
    known_limits = FrameGridAdapter.known_limits + "; the per-frame [CLS] rows are always kept"

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        return side, side

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """VisionZip on the projector's input: one row per patch, each frame's [CLS] row first (kept)."""
        return self.clip_projector_cut(stage, self.base_model().video_tower, pool=None, cls_row=True)

    def record_vision_saliency(self, sink: Callable[[list[torch.Tensor]], None]) -> list[Callable[[], None]] | None:
        layer = self.feature_layer()
        if layer is None:
            return None
        tower = self.base_model().video_tower
        encoder = getattr(tower, "vision_model", tower).encoder  # older CLIPVisionModel nests a vision_model

        def read_cls_attention(module: nn.Module, args: tuple, kwargs: dict) -> None:
            # One saliency per frame; frames of a video are consecutive, so the engine's concatenation
            # in prompt order is the same as one per video.
            sink(list(cls_attention(module, args[0] if args else kwargs["hidden_states"])))

        handle = encoder.layers[layer].self_attn.register_forward_pre_hook(read_cls_attention, with_kwargs=True)
        return [handle.remove]


def cls_attention(attention: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """[frames, patches]: the [CLS] query's softmax attention over the patch keys, mean over heads.

    Recomputed from the layer's own input and projections, as eager attention would: the layer may
    run sdpa or flash-attention, which return no weights.
    """
    weights, _ = cls_attention_and_keys(attention, hidden)
    return weights.mean(dim=1)[:, 1:]
