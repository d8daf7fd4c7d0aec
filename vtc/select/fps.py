"""Fixed-rate sampling in real time (not in frame index), so variable-frame-rate video is sampled evenly."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, token_budget


@register("fps")
@dataclass
class FpsFrames(Selector):
    """Before the encoder (inside wrap, at the LLM: real times): keep the group nearest each tick of a fixed rate.

    ``fps`` is the rate in frame groups per second (the knob every loader has; 1.0 when neither it
    nor a budget is given); with a budget instead, the rate is the one whose ticks fit the budget
    over the video's duration. Ticks that land on the same group keep it once.
    """

    fps: float | None = None
    budget_knob = ("fps", "fps= (frame groups per second)")
    whole_video_only = "chooses whole frames"
    # Inside vtc.wrap the groups' real times are known at the prefill hook, not at the encoder.
    needs = frozenset({"times"})

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        times = frames.times.double()
        start, end = float(times[0]), float(times[-1])
        notes: list[str] = []
        if budget.is_set:
            count = affordable_units(self.name, budget, token_budget(budget, len(frames), cost), cost.full, notes)
            ticks = torch.linspace(start, end, min(count, len(frames)), dtype=torch.float64, device=times.device)
        else:
            rate = self.fps if self.fps is not None else 1.0
            ticks = torch.arange(start, end + 1e-9, 1.0 / rate, dtype=torch.float64, device=times.device)
        nearest = (times[None, :] - ticks[:, None]).abs().argmin(dim=1)
        return Plan(keep=nearest.unique(), notes=notes)
