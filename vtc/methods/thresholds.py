"""Raising a similarity threshold until merging leaves enough tokens: how PruneVid meets a budget.

PruneVid merges every token whose similarity exceeds a threshold ``tau`` and then clusters what is
left down to the budget. On static content merging alone can leave fewer tokens than asked; merging
less, i.e. a higher ``tau``, is the knob for that. (HoliTom, which also has a temporal window cap,
shortens its windows instead and keeps its ``tau``: see :mod:`vtc.methods.holitom`.)
"""
from __future__ import annotations

from typing import Callable

import torch


def lowest_fitting_threshold(values: torch.Tensor, tau: float, fits: Callable[[torch.Tensor | float], bool]) -> torch.Tensor | float:
    """The smallest threshold >= ``tau`` for which ``fits`` holds, among ``tau`` and the ``values`` above it.

    ``fits(c)`` must be monotone (once true, true for every higher threshold) and true above every
    value (nothing is then similar enough to merge). A value c used as threshold keeps tokens whose
    similarity is strictly greater than c, so it merges exactly the values above it. Binary search:
    O(log(#values)) calls of ``fits``.
    """
    if fits(tau):
        return tau
    candidates = torch.unique(values[values > tau])  # ascending
    low, high = 0, candidates.numel() - 1
    while low < high:
        middle = (low + high) // 2
        if fits(candidates[middle]):
            high = middle
        else:
            low = middle + 1
    return candidates[low]
