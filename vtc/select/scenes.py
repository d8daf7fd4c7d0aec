"""TDC-style scene segmentation: split by inter-frame similarity, spend the budget scene by scene."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget, apportion
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, evenly, token_budget


@register("scenes")
@dataclass
class Scenes(Selector):
    """Before the encoder: cut the video into scenes where consecutive frames stop resembling each other.

    TDC (Temporal Dynamic Context) segments a video into scenes by inter-frame similarity and
    keeps frames per scene (its query-based temporal compressor is trained and not reproduced).
    Here consecutive frame groups are compared by the mean absolute difference of their
    thumbnails; a scene starts where it exceeds ``threshold`` (intensity in [0, 1]). The budget is
    apportioned over scenes (one group per scene first, the rest by scene length, vtc.budget.apportion)
    and each scene keeps evenly spaced groups, so every scene is seen. Scene starts (unit positions)
    go to ``vtc_stats.scenes``.
    """

    threshold: float = 0.12
    whole_video_only = "chooses whole frames"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold is a mean intensity difference in (0, 1), got {self.threshold}")

    def boundaries(self, frames: Frames) -> list[int]:
        means = frames.thumbs.float().mean(dim=1).flatten(1)
        change = (means[1:] - means[:-1]).abs().mean(dim=1)
        return [0] + (torch.nonzero(change > self.threshold).flatten() + 1).tolist()

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        notes: list[str] = []
        count = affordable_units(self.name, budget, token_budget(budget, len(frames), cost), cost.full, notes)
        starts = self.boundaries(frames)
        ends = starts[1:] + [len(frames)]
        sizes = [e - s for s, e in zip(starts, ends)]
        keep = [start + evenly(n, size) for start, size, n in zip(starts, sizes, apportion(sizes, count)) if n]
        if count < len(starts):
            notes.append(f"{len(starts)} scenes but a budget of {count} groups: the longest scenes were kept")
        return Plan(keep=torch.cat(keep).to(frames.times.device), scenes=starts, notes=notes)
