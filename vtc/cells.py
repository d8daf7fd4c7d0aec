"""Lookups across frames at one (h, w) grid cell: what temporal methods compare a token with."""
from __future__ import annotations

import torch

from .tokens import VisualTokens


def _cells(tokens: VisualTokens) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Each token's frame rank among the frames present, their count, its flat cell index and the cell count."""
    frames, rank = torch.unique(tokens.frame, return_inverse=True)
    height = int(tokens.coords[:, 1].max()) + 1 if len(tokens) else 1
    width = int(tokens.coords[:, 2].max()) + 1 if len(tokens) else 1
    return rank, frames.numel(), tokens.coords[:, 1] * width + tokens.coords[:, 2], height * width


def same_cell_rows(tokens: VisualTokens, step: int) -> torch.Tensor:
    """For each token, the row of the token at the same (h, w) ``step`` frames later (negative: earlier)
    among the frames present, or -1 where that frame or that cell is absent."""
    rank, count, cell, cells = _cells(tokens)
    rows = torch.full((count + 2 * abs(step), cells), -1, dtype=torch.long, device=tokens.frame.device)
    rows[rank + abs(step), cell] = torch.arange(len(tokens), device=tokens.frame.device)
    return rows[rank + abs(step) + step, cell]


def cell_means(values: torch.Tensor, tokens: VisualTokens) -> torch.Tensor:
    """[N, D] mean of ``values`` [N, D] over the tokens that share each token's (h, w) cell, all frames."""
    _, _, cell, cells = _cells(tokens)
    cell = cell.to(values.device)
    sums = values.new_zeros(cells, values.shape[-1]).index_add_(0, cell, values)
    counts = torch.bincount(cell, minlength=cells).to(values.dtype)
    return (sums / counts.clamp(min=1)[:, None])[cell]


def relative_time(tokens: VisualTokens) -> torch.Tensor:
    """[N] each token's frame rank scaled to [0, 1] (0 for a single frame): when in the clip it sits."""
    rank, count, _, _ = _cells(tokens)
    return rank.float() / max(count - 1, 1)
