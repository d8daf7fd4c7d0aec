"""Named sizes of the synthetic benchmark: how many visual tokens a video gives the reference model.

The reference model merges 2 frames x 28 x 28 px into one visual token (Qwen2.5-VL: patch 14, merge 2,
temporal patch 2), so a tier's token count is ``num_frames / 2 * (size / 28) ** 2``:

* ``fast`` (the default): 16 frames at 112 px, 8 frame groups of 4 x 4 = 128 tokens. Every test and the
  committed tables before issue 19 use it; a whole evaluation takes seconds.
* ``scale``: 32 frames at 224 px, 16 frame groups of 8 x 8 = 1,024 tokens: the low end of what real
  video LLMs see (Qwen2.5-VL at 32-64 frames: 64-256 tokens per group), where the published
  compression methods were designed to work. Objects scale with the frame, so each covers 2 x 2 tokens
  and most of a frame is static background, as in real footage.
"""
from __future__ import annotations

from dataclasses import dataclass

MERGED_CELL = 28  # pixels per merged visual token side of the reference model (patch 14 x merge 2)
TEMPORAL_PATCH = 2  # frames per visual token


@dataclass(frozen=True)
class Tier:
    name: str
    size: int  # frame side in pixels
    num_frames: int

    @property
    def visual_tokens(self) -> int:
        """Visual tokens one video of this tier gives the reference model."""
        return self.num_frames // TEMPORAL_PATCH * (self.size // MERGED_CELL) ** 2

    @property
    def description(self) -> str:
        """What the tier is, in the words of help texts and table headers."""
        return f"{self.num_frames} frames at {self.size} px ({self.visual_tokens:,} visual tokens)"


TIERS: dict[str, Tier] = {tier.name: tier for tier in (Tier("fast", 112, 16), Tier("scale", 224, 32))}
DEFAULT_TIER = "fast"


def get_tier(name: str) -> Tier:
    """The tier called ``name``; a ValueError that lists the tiers otherwise."""
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}; choose from {', '.join(TIERS)}")
    return TIERS[name]
