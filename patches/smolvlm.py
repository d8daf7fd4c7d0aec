"""SmolVLM / SmolVLM2: Llama language model (``text_model``) with 1D RoPE, video frames fed as images."""
from __future__ import annotations

from typing import Any

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
    family = "SmolVLM"
    language_model_path = "model.text_model"
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

    def frame_pixels(self, captured: dict[str, Any]) -> torch.Tensor | None:
        """The batch's frames without the all-zero images the processor pads batches with (the model drops them too)."""
        frames = super().frame_pixels(captured)
        return None if frames is None else frames[frames.flatten(1).ne(0).any(dim=1)]
