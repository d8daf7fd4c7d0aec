"""TDC-style scene segmentation: cut at the least similar transitions, spend the budget scene by scene."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget, apportion
from ..method import top_k_stable
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, evenly, token_budget


@register("scenes")
@dataclass
class Scenes(Selector):
    """Before the encoder: cut the video into scenes at its least similar transitions, keep each scene's first group.

    TDC (Temporal Dynamic Context; official code Hoar012/TDC-Video, ``adapt_segment``) cuts the video
    at the ``max_num_segments`` (24) consecutive-frame transitions of lowest cosine similarity (a fixed
    threshold is only an ablation there), and within each scene keeps the first frame of every chunk
    whole as the static frame (the other frames go to a trained Q-Former, not reproduced). Here the
    budget sets the number of scenes: with room for K groups, the video is cut at its K-1 least
    similar transitions (at most ``max_scenes`` - 1, the official 24), each scene keeps its first
    group, and budget beyond one group per scene is apportioned over the scenes by length
    (vtc.budget.apportion) as evenly spaced groups from the first. Similarity is the mean absolute
    difference of consecutive groups' thumbnails (mean over a group's frames), since the selector sees
    pixels, not the DINO features TDC compares; ties go to the earlier transition. Scene starts (unit
    positions) go to ``vtc_stats.scenes``.
    """

    max_scenes: int = 25
    whole_video_only = "chooses whole frames"

    def __post_init__(self) -> None:
        if self.max_scenes < 1:
            raise ValueError(f"max_scenes must be >= 1, got {self.max_scenes}")

    def boundaries(self, frames: Frames, scenes: int) -> list[int]:
        """Starts of ``scenes`` scenes: 0 and the groups after the scenes-1 largest changes."""
        means = frames.thumbs.float().mean(dim=1).flatten(1)
        change = (means[1:] - means[:-1]).abs().mean(dim=1)
        cuts = top_k_stable(change, max(0, min(scenes, len(frames)) - 1))
        return [0] + sorted((cuts + 1).tolist())

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        notes: list[str] = []
        count = affordable_units(self.name, budget, token_budget(budget, len(frames), cost), cost.full, notes)
        starts = self.boundaries(frames, min(count, self.max_scenes))
        ends = starts[1:] + [len(frames)]
        sizes = [e - s for s, e in zip(starts, ends)]
        keep = [start + evenly(n, size) for start, size, n in zip(starts, sizes, apportion(sizes, count)) if n]
        return Plan(keep=torch.cat(keep).to(frames.times.device), scenes=starts, notes=notes)
