"""SmolVLM / SmolVLM2: Llama language model (``text_model``) with 1D RoPE, video frames fed as images."""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from .image_frames import ImageFramesAdapter


class SmolVLMAdapter(ImageFramesAdapter):
    """Each frame is ``Frame from mm:ss:<fake_token_around_image><global-img>`` + image tokens + ``<fake…>``.

    Tokens per frame: ((image_size / patch_size) / scale_factor)^2, 64 for SmolVLM2 (512 px,
    16 px patches, scale 4). The connector's pixel shuffle keeps raster order. Batched videos are
    padded with all-zero frames that the model drops before the vision encoder; they have no
    image tokens in the prompt, so they never reach vtc.
    """

    model_types = ("smolvlm",)
    vision_stage = "projector"
    family = "SmolVLM"
    language_model_path = "model.text_model"
    # pixel_values [B, N, C, H, W] keep each prompt's frames in its own row (zero frames pad the rest),
    # so the select stage can choose frames per prompt before the encoder, even inside generate(),
    # which encodes before any forward sees the prompt.
    select_stage = "encoder"
    batch_note = (
        "left-padded, per-sample budgets; SmolVLMProcessor writes the batch's padded frame count into every "
        "prompt (process each sample, then left-pad)"
    )
    known_limits = (
        "frames are read as images: a split image (row/col tiles) in the prompt is refused; no per-token pixels "
        "(`dtd(mode=pixel)` refuses); token times are frame indices"
    )

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        side = int(vision.image_size // vision.patch_size // self.config.scale_factor)
        return side, side

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """VisionZip on the connector's projection input (one row per pixel-shuffled block of patches), read at the
        SigLIP tower's last layer with the frame's mean query as a pseudo-[CLS]; each frame on its own."""
        from .projector_cut import ProjectorCut, mean_query_attention_and_keys, pool_blocks

        if getattr(stage.method, "every_block", False):
            raise NotImplementedError(
                f"the SmolVLM adapter cannot run {stage.method.name}: it acts in every block of the tower, and "
                "SmolVLM's vision stage acts on the connector's input"
            )
        if stage.method.layer not in (-1, -2):
            raise ValueError(f"{stage.method.name} on SmolVLM reads the last layer of the tower, whose output feeds the connector")
        if stage.budget.tokens is not None and stage.budget.scope != "frame":
            raise ValueError(
                f"{stage.method.name} on SmolVLM decides frame by frame: give retain= or a per-frame token count"
            )
        height, width = self.frame_grid()
        base = self.base_model()
        layers = base.vision_model.encoder.layers
        return ProjectorCut(layers[-1].self_attn, base.connector.modality_projection, stage, len(layers) - 1,
                               (height, width), lambda: None, mean_query_attention_and_keys,
                               functools.partial(pool_blocks, height=height, width=width), cls_row=False,
                               tower_cls=False).install()

    def frame_pixels(self, captured: dict[str, Any]) -> torch.Tensor | None:
        """The batch's frames without the all-zero images the processor pads batches with (the model drops them too)."""
        frames = super().frame_pixels(captured)
        return None if frames is None else frames[_real_frames(frames)]

    def select_thumbnails(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        images = args[0] if args else kwargs["pixel_values"]
        real = _real_frames(images).sum(dim=1)
        return self.frame_thumbnails({"pixel_values": images}, [int(n) for n in real if n])

    def encode_selected(self, encode: Callable[..., Any], kept: list[torch.Tensor], args: tuple, kwargs: dict) -> Any:
        """Encode only the kept frames: each prompt's kept frames move to the front of its row of
        ``pixel_values`` [B, N, C, H, W] (zero frames pad the rest, as the processor pads); the features
        of each prompt come back at full length with zeros for the frames not encoded."""
        images = args[0] if args else kwargs.pop("pixel_values")
        masks = args[1] if len(args) > 1 else kwargs.pop("pixel_attention_mask", None)
        real = _real_frames(images)
        prompts = [b for b in range(images.shape[0]) if bool(real[b].any())]
        chosen = {b: real[b].nonzero().flatten()[frames.to(images.device)] for b, frames in zip(prompts, kept)}
        width = max(len(c) for c in chosen.values())
        subset = images.new_zeros(images.shape[0], width, *images.shape[2:])
        subset_masks = None if masks is None else masks.new_zeros(masks.shape[0], width, *masks.shape[2:])
        for b, frames in chosen.items():
            subset[b, : len(frames)] = images[b, frames]
            if masks is not None:
                subset_masks[b, : len(frames)] = masks[b, frames]
        output = encode(subset, subset_masks, *args[2:], **kwargs)
        height, width_tokens = self.frame_grid()
        per_frame = height * width_tokens
        features = []
        for b, part in enumerate(output.pooler_output):
            if b not in chosen:
                features.append(part)
                continue
            frames = kept[prompts.index(b)].to(part.device)
            full = part.new_zeros(int(real[b].sum()) * per_frame, part.shape[-1])
            full[(frames[:, None] * per_frame + torch.arange(per_frame, device=part.device)).flatten()] = part
            features.append(full)
        output.pooler_output = features
        return output


def _real_frames(images: torch.Tensor) -> torch.Tensor:
    """Which frames hold pixels, over the leading dims of [..., C, H, W]: the processor pads batches
    with all-zero frames, which the model skips."""
    return images.flatten(-3).ne(0).any(dim=-1)
