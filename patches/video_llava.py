"""Video-LLaVA: CLIP frames with their [CLS] (16x16 + 1 = 257 rows per frame) and a real [CLS] attention."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .frame_grid import FrameGridAdapter


class VideoLlavaAdapter(FrameGridAdapter):
    """Each frame is its [CLS] row then the 16x16 patch grid; the Llama LM uses 1D RoPE.

    The [CLS] rows enter the LLM but are not visual tokens of the grid: vtc keeps them like text.
    The video tower's [CLS] attention over the frame's patches (head-averaged softmax row of the
    [CLS] query, at the encoder layer whose output becomes the video features) is exposed to
    methods as ``tokens.attn`` with ``extras["attn_source"]`` naming it, so saliency-driven methods
    use it instead of their pseudo-[CLS] fallback.
    """

    model_types = ("video_llava",)
    family = "Video-LLaVA"
    frame_prefix_rows = 1
    known_limits = FrameGridAdapter.known_limits + "; the per-frame [CLS] rows are always kept"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._cls_attention: torch.Tensor | None = None

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        return side, side

    def feature_layer(self) -> int | None:
        """Index of the encoder layer whose output is the video features (None: the embeddings)."""
        chosen = self.config.vision_feature_layer
        num_layers = self.config.vision_config.num_hidden_layers
        states = [v if v >= 0 else num_layers + 1 + v for v in (chosen if isinstance(chosen, list) else [chosen])]
        return max(states) - 1 if max(states) > 0 else None

    def install(self, engine: Any) -> list[Callable[[], None]]:
        layer = self.feature_layer()
        if layer is None:
            return []
        tower = self.base_model().video_tower
        encoder = getattr(tower, "vision_model", tower).encoder  # older CLIPVisionModel nests a vision_model
        attention = encoder.layers[layer].self_attn
        handle = attention.register_forward_pre_hook(self._record_cls_attention, with_kwargs=True)
        return [handle.remove]

    def _record_cls_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        with torch.no_grad():
            batch, length, _ = hidden.shape
            query = module.q_proj(hidden[:, :1]).view(batch, 1, module.num_heads, module.head_dim).transpose(1, 2)
            key = module.k_proj(hidden).view(batch, length, module.num_heads, module.head_dim).transpose(1, 2)
            scores = (query.float() @ key.float().transpose(-1, -2)) * module.scale
            self._cls_attention = torch.softmax(scores, dim=-1).mean(dim=1)[:, 0, 1:]

    def vision_attention(self, sample_sizes: list[int]) -> tuple[str, list[torch.Tensor]] | None:
        attention, self._cls_attention = self._cls_attention, None
        if attention is None:
            return None
        flat = attention.flatten()
        if flat.numel() != sum(sample_sizes):
            raise RuntimeError(
                f"the video tower's [CLS] attention covers {flat.numel()} patches but the prompts hold "
                f"{sum(sample_sizes)} visual tokens"
            )
        source = f"Video-LLaVA vision tower [CLS] attention, encoder layer {self.feature_layer()}"
        return source, list(torch.split(flat, sample_sizes))
