"""Random pruning: the baseline every paper must beat (25% random keeps 94.8% on LLaVA-OV-7B)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..method import ScoreMethod
from ..registry import register
from ..tokens import VisualTokens


@register("random")
@dataclass
class RandomPrune(ScoreMethod):
    """Keep a uniformly random subset of the budgeted size (prefill stage).

    Budget: ``retain``/``tokens`` directly, per video or per frame. ``seed`` makes runs repeatable;
    each sample draws from the same seed, so equal inputs keep equal tokens.
    """

    seed: int = 0
    stage = "prefill"

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(tokens), generator=generator).to(tokens.features.device)
