"""Spatial average pooling of each frame's token grid: the cheapest merging baseline."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens


@register("pool")
@dataclass
class SpatialPool(Method):
    """Average each ``size x size`` block of a frame's (h, w) grid into one token (default 2x2).

    The merged token is the plain mean of the block's tokens and takes the position ids of the
    block's top-left token. Blocks at a ragged edge average what they hold. Budget: when one is
    given, ``size`` is the smallest block whose pooling stays within it, ceil(sqrt(1/retain))
    (retain 0.25 -> 2x2, 0.5 -> 2x2, 0.1 -> 4x4): a grid cannot hit an arbitrary count, so the
    result keeps at most the budget and a note in the stats gives the real count.
    """

    size: int | None = None
    stage = "prefill"
    budget_knob = ("size", "size=")

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")


    def block_size(self, tokens: VisualTokens, budget: Budget) -> int:
        if self.size is not None:
            return self.size
        if not budget.is_set:
            return 2
        fraction = budget.count(len(tokens)) / len(tokens)
        return max(1, math.ceil(math.sqrt(1.0 / fraction) - 1e-9))

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        size = self.block_size(tokens, budget)
        t, h, w = tokens.frame, tokens.coords[:, 1], tokens.coords[:, 2]
        blocks_w = int(w.max()) // size + 1
        blocks_h = int(h.max()) // size + 1
        group = (t * blocks_h + h // size) * blocks_w + w // size
        groups, inverse = torch.unique(group, return_inverse=True)
        sums = torch.zeros(groups.numel(), tokens.features.shape[1], dtype=torch.float32, device=group.device)
        sums.index_add_(0, inverse, tokens.features.float())
        counts = torch.bincount(inverse, minlength=groups.numel()).clamp(min=1)
        means = sums / counts[:, None]
        first = torch.full((groups.numel(),), len(tokens), dtype=torch.long, device=group.device)
        first.scatter_reduce_(0, inverse, torch.arange(len(tokens), device=group.device), reduce="amin")
        order = torch.argsort(first)
        notes = []
        if budget.is_set and self.size is None and groups.numel() != budget.count(len(tokens)):
            notes.append(f"{size}x{size} blocks keep {groups.numel()} tokens for a budget of "
                         f"{budget.count(len(tokens))} (pooling keeps whole blocks)")
        return Selection(keep=first[order], features=means[order].to(tokens.features.dtype), notes=notes,
                         merged_into=torch.argsort(order)[inverse])
