"""InternVL (InternVL3 / InternVL3.5 "-hf" checkpoints): Qwen2 language model with 1D RoPE, frames as images."""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from .base import _resolve
from .projector_cut import pool_blocks
from .image_frames import ImageFramesAdapter
from .qwen_vl import CLIP_MEAN, CLIP_STD


class InternVLAdapter(ImageFramesAdapter):
    """Each frame is ``Frame{i}: <img>`` + one ``<IMG_CONTEXT>`` per token + ``</img>``, frames joined by newlines.

    Tokens per frame: (image_size / patch_size * downsample_ratio)^2, 256 for the released
    448 px / 14 px / 0.5 models. The pixel shuffle keeps raster order, so token i of a frame sits
    at (i // W, i % W) and covers a (1/ratio) x (1/ratio) block of ViT patches.

    InternViT has a real [CLS] token: the ViT saliency handed to methods that need one
    (``needs={"vision_saliency"}``: FastVID's ATS, HoliTom) is the [CLS] query's head-averaged
    softmax attention over the patches in the layer whose output feeds the projector
    (``vision_feature_layer=-1``, the last), recomputing only that one query row so any attention
    implementation works, summed over each visual token's patch block. For another
    ``vision_feature_layer`` it gives none and those methods fall back as their docstrings say.
    """

    model_types = ("internvl",)
    vision_stage = "projector"
    family = "InternVL"
    pixel_mean, pixel_std = CLIP_MEAN, CLIP_STD
    batch_note = (
        "left-padded, per-sample budgets; InternVLProcessor cannot batch clips of different lengths "
        "(process each sample, then left-pad)"
    )
    known_limits = (
        "frames are read as images: a tiled (multi-patch) image in the prompt is refused; no per-token pixels "
        "(`dtd(mode=pixel)` refuses); token times are frame indices"
    )

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        ratio = float(self.config.downsample_ratio)
        return tuple(int(size // patch * ratio) for size, patch in zip(vision.image_size, vision.patch_size))

    def record_vision_saliency(self, sink: Callable[[list[torch.Tensor]], None]) -> list[Callable[[], None]] | None:
        if self.config.vision_feature_layer != -1:
            return None
        attention = _resolve(self.model, "model.vision_tower").encoder.layer[-1].attention
        height, width = self.frame_grid()

        def read_cls_attention(module: nn.Module, args: tuple, kwargs: dict) -> None:
            # One saliency per frame (= one encoded image), frames in prompt order.
            patches = cls_attention(module, args[0] if args else kwargs["hidden_states"])
            sink(list(pool_blocks(patches, "sum", height, width)))

        handle = attention.register_forward_pre_hook(read_cls_attention, with_kwargs=True)
        return [handle.remove]

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """VisionZip on the projector's input (one row per pixel-shuffled block), read at the last ViT layer, each
        frame on its own (a retain budget is met per frame, rounded up per frame)."""
        from .projector_cut import ProjectorCut

        if getattr(stage.method, "every_block", False):
            raise NotImplementedError(
                f"the InternVL adapter cannot run {stage.method.name}: it acts in every block of the tower, and "
                "InternVL's vision stage acts on the projector's input"
            )
        if self.config.vision_feature_layer != -1 or stage.method.layer not in (-1, -2):
            raise ValueError(
                f"{stage.method.name} on InternVL reads the last ViT layer, whose output feeds the projector "
                "(vision_feature_layer=-1); other layers are not available before the projector"
            )
        if stage.budget.tokens is not None and stage.budget.scope != "frame":
            raise ValueError(
                f"{stage.method.name} on InternVL decides frame by frame (the model encodes a flat batch of frames "
                "that does not say which prompt each belongs to): give retain= or a per-frame token count"
            )
        height, width = self.frame_grid()

        tower = _resolve(self.model, "model.vision_tower")
        return ProjectorCut(tower.encoder.layer[-1].attention, _resolve(self.model, "model.multi_modal_projector"),
                               stage, len(tower.encoder.layer) - 1, (height, width), lambda: None,
                               cls_weights_and_keys, functools.partial(pool_blocks, height=height, width=width),
                               cls_row=False).install()


def cls_attention(module: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Head-averaged softmax attention of the [CLS] query over the patch keys: [frames, patches], float32."""
    weights, _ = cls_weights_and_keys(module, hidden)
    return weights.mean(dim=1)[:, 1:]


@torch.no_grad()
def cls_weights_and_keys(module: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[frames, heads, S] the [CLS] query's softmax attention over all keys and [frames, heads, S, head_dim] the
    keys. ``module`` is an InternVL vision attention block and ``hidden`` its (layer-normed) input; the
    projections and q/k norms are the block's own, so this equals row 0 of its attention map."""
    frames, length, _ = hidden.shape
    heads, head_dim = module.num_heads, module.head_dim
    query = module.q_norm(module.q_proj(hidden[:, :1])).view(frames, 1, heads, head_dim).transpose(1, 2)
    key = module.k_norm(module.k_proj(hidden)).view(frames, length, heads, head_dim).transpose(1, 2).float()
    scores = (query.float() @ key.transpose(-1, -2)) * module.scale
    return torch.softmax(scores, dim=-1)[:, :, 0], key
