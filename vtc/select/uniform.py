"""Uniform frame sampling, the baseline every model uses today, as a select-stage method."""
from __future__ import annotations

from dataclasses import dataclass

from ..budget import Budget
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, evenly, token_budget


@register("uniform-frames")
@dataclass
class UniformFrames(Selector):
    """Before the encoder: keep frame groups evenly spaced over the candidates (first and last included).

    Budget: as many whole units (temporal token groups) as fit in the token budget at full
    resolution. Named ``uniform-frames`` because ``uniform`` is the prefill-stage method that
    drops the same frames after the encoder has paid for them.
    """

    whole_video_only = "chooses whole frames"

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        notes: list[str] = []
        count = affordable_units(self.name, budget, token_budget(budget, len(frames), cost), cost.full, notes)
        return Plan(keep=evenly(count, len(frames), frames.times.device), notes=notes)
