"""Uniform frame dropping: what fixed-fps sampling amounts to, applied to visual tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens


@register("uniform")
@dataclass
class UniformFrames(Method):
    """Keep whole frames, evenly spaced in time (first and last included when two or more are kept).

    Budget: the number of frames kept is the token budget divided by tokens per frame, rounded
    down (at least one frame), so the result never exceeds the budget except for that one-frame
    minimum; a note in the stats gives the real count. ``scope='frame'`` is meaningless here and refused.
    """

    stage = "prefill"

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if budget.scope == "frame":
            raise ValueError("uniform drops whole frames; a per-frame budget does not apply")
        frames = tokens.frames()
        per_frame = len(tokens) / len(frames)
        n_keep = min(len(frames), max(1, int(budget.count(len(tokens)) / per_frame + 1e-9)))
        chosen = torch.linspace(0, len(frames) - 1, n_keep).round().long().unique().tolist()
        keep = torch.cat([frames[i] for i in chosen])
        count = budget.count(len(tokens))
        notes = []
        if keep.numel() != count:
            notes.append(f"{len(chosen)} whole frame(s) keep {keep.numel()} tokens for a budget of {count}"
                         + (" (at least one frame)" if keep.numel() > count else ""))
        return Selection(keep=torch.sort(keep).values, notes=notes)
