"""Density-peak clustering (DPC-KNN) shared by FastVID, HoliTom and PruneVid.

Rodriguez & Laio's density peaks with a k-nearest-neighbour density, as the three official codes
compute it (distances scaled by sqrt(D); the official codes add U(0, 1e-6) noise to the density to
break ties, which vtc omits: ties are broken towards the lower index instead).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DensityPeaks:
    distance: torch.Tensor  # [N, N] cdist(x, x) / sqrt(D)
    density: torch.Tensor  # [N] exp(-mean squared distance to the k nearest, self included)
    delta: torch.Tensor  # [N] distance to the nearest denser point (max distance for the densest)
    score: torch.Tensor  # [N] density * delta: cluster-centre likelihood


def density_peaks(x: torch.Tensor, k: int) -> DensityPeaks:
    """DPC-KNN statistics of the rows of ``x`` [N, D]; O(N^2) in memory and time, so callers keep N per call small."""
    x = x.float()
    n = x.shape[0]
    distance = torch.cdist(x, x) / x.shape[1] ** 0.5
    k = max(1, min(k, n))
    nearest = torch.topk(distance, k, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    masked = distance.masked_fill(~denser, float("inf"))
    delta = masked.min(dim=-1).values
    delta = torch.where(torch.isinf(delta), distance.max(), delta)
    return DensityPeaks(distance, density, delta, density * delta)


def top_centres(score: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores, sorted by index (lower index wins ties)."""
    order = torch.sort(score, descending=True, stable=True).indices[:count]
    return torch.sort(order).values


def assign_to_nearest(distance: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """For every point, the position (in ``centres``) of its nearest centre; centres map to themselves."""
    labels = distance[:, centres].argmin(dim=-1)
    labels[centres] = torch.arange(centres.numel(), device=centres.device)
    return labels
