"""The independent reference for attention-ranked methods: the model's own eager ``output_attentions``."""
from __future__ import annotations

from typing import Any, Callable

import torch


def with_eager(model: Any, run: Callable[[], Any]) -> Any:
    """``run()`` with the model on eager attention (which returns its weights), then back on sdpa."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return run()
    finally:
        model.set_attn_implementation("sdpa")


def top_rows(attentions: torch.Tensor, rows: torch.Tensor, count: int) -> list[int]:
    """Among ``rows``, the ``count`` the last query attends to most in one layer's weights [H, Q, K] (heads
    averaged; ties to the lower index, as vtc), as sorted indices into ``rows``."""
    scores = attentions[:, -1, :].mean(dim=0)[rows]
    return torch.sort(torch.sort(scores, descending=True, stable=True).indices[:count]).values.tolist()
