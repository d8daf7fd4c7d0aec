"""InternVL (InternVL3 / InternVL3.5 "-hf" checkpoints): Qwen2 language model with 1D RoPE, frames as images."""
from __future__ import annotations

from .image_frames import ImageFramesAdapter


class InternVLAdapter(ImageFramesAdapter):
    """Each frame is ``Frame{i}: <img>`` + one ``<IMG_CONTEXT>`` per token + ``</img>``, frames joined by newlines.

    Tokens per frame: (image_size / patch_size * downsample_ratio)^2, 256 for the released
    448 px / 14 px / 0.5 models. The pixel shuffle keeps raster order, so token i of a frame sits
    at (i // W, i % W).
    """

    model_types = ("internvl",)
    family = "InternVL"
    known_limits = (
        "frames are read as images: a tiled (multi-patch) image in the prompt is refused",
        "InternVLProcessor cannot batch clips of different lengths: process each sample and left-pad",
        "no timestamps or raw pixels reach vtc (dtd pixel mode refused)",
    )

    def frame_grid(self) -> tuple[int, int]:
        vision = self.config.vision_config
        ratio = float(self.config.downsample_ratio)
        return tuple(int(size // patch * ratio) for size, patch in zip(vision.image_size, vision.patch_size))
