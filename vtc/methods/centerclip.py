"""CenterCLIP: segment-level k-medoids token clustering, keeping the medoids.

Paper: Zhao et al., "CenterCLIP: Token Clustering for Efficient Text-Video Retrieval" (SIGIR 2022).
Official code: mzhaoshuai/CenterCLIP (``modules/cluster/cluster.py`` ``TokenClusterInter``,
``modules/cluster/fast_kmeans.py`` ``batch_fast_kmedoids``, ``cluster_utils.KKZ_init``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget, apportion
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens

DISTANCES = ("euclidean", "cosine")


def pairwise_distance(x: torch.Tensor, metric: str) -> torch.Tensor:
    """[n, n] distances as the official code prepares them: shifted to be all negative (max - 1), the
    diagonal lowered by one more so each point is its own nearest. Neither shift changes a decision
    mathematically; keeping them keeps the float rounding (and so near-tie decisions) official."""
    if metric == "euclidean":
        distance = torch.cdist(x, x)
    else:
        unit = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        distance = 1.0 - unit @ unit.T
    distance = distance - distance.max() - 1.0
    distance.diagonal().sub_(1.0)
    return distance


def kmedoids(
    x: torch.Tensor, k: int, *, metric: str = "euclidean", iter_limit: int = 100, threshold: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-medoids of the rows of ``x`` [n, D]: (medoid indices ascending [k], cluster of every row [n]).

    As the official ``batch_fast_kmedoids``: KKZ initialisation (the largest-norm point, then
    repeatedly the point farthest from the chosen ones), then alternate nearest-medoid assignment
    and, per cluster, the member with the smallest summed distance to its cluster; stop when the
    medoids move less than ``threshold`` in total or after ``iter_limit`` rounds. Ties go to the
    lower index. The loop over k in the initialisation is sequential by nature.
    """
    n = x.shape[0]
    device = x.device
    if k >= n:
        everyone = torch.arange(n, device=device)
        return everyone, everyone.clone()
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=device), torch.full((n,), -1, dtype=torch.long, device=device)
    x = x.float()
    distance = pairwise_distance(x, metric)
    medoids = torch.empty(k, dtype=torch.long, device=device)
    medoids[0] = torch.argmax(x.norm(dim=-1))
    nearest = distance[medoids[0]].clone()
    for i in range(1, k):
        medoids[i] = torch.argmax(nearest)
        nearest = torch.minimum(nearest, distance[medoids[i]])
    index = torch.arange(n, device=device)
    for _ in range(iter_limit):
        assign = distance[medoids].argmin(dim=0)
        cost = (distance * (assign[:, None] == assign[None, :])).sum(dim=1)
        best = torch.full((k,), float("inf"), device=device).scatter_reduce(0, assign, cost, reduce="amin")
        is_best = cost == best[assign]
        new = torch.full((k,), n, dtype=torch.long, device=device).scatter_reduce(
            0, assign[is_best], index[is_best], reduce="amin"
        )
        shift = (x[new] - x[medoids]).norm(dim=-1).sum()
        medoids = new
        if shift < threshold:
            break
    medoids = torch.sort(medoids).values
    return medoids, distance[medoids].argmin(dim=0)


def segments(tokens: VisualTokens, segment_frames: int) -> list[list[torch.Tensor]]:
    """Row indices of each frame, grouped in runs of ``segment_frames`` consecutive frames (the last may be shorter)."""
    frames = tokens.frames()
    return [frames[i : i + segment_frames] for i in range(0, len(frames), segment_frames)]


@register("centerclip")
@dataclass
class CenterCLIP(Method):
    """CenterCLIP: split the video into segments of consecutive frames, k-medoids per segment, keep the medoids.

    Paper: Zhao et al., "CenterCLIP: Token Clustering for Efficient Text-Video Retrieval" (SIGIR
    2022). Its scripts (MSR-VTT, MSVD, LSMDC, ActivityNet) cluster inside the CLIP ViT after block
    6, halving or more the frames: 12 frames -> 6 segments of 2 frames (also 3 or 4 frames per
    segment), 49 medoids per segment (one ViT-B/32 frame's worth), k-medoids with KKZ init,
    Euclidean distance, at most 100 iterations, stop threshold 1e-6, no aggregation (the medoid
    tokens themselves are kept).

    Defaults: ``segment_frames`` 2 (the main setting; vtc frames are the family's temporal token
    groups, e.g. two raw frames on Qwen), ``iterations`` 100, ``threshold`` 1e-6, ``distance``
    "euclidean"; with no budget each segment keeps one frame's worth of medoids (``clusters``
    unset), i.e. retention 1/segment_frames.

    Budget: ``clusters`` is the paper's K per segment. A vtc budget replaces it and is met
    exactly: the segments share ``budget.count(N)`` medoids in proportion to their token counts,
    at least one per segment when the budget allows (largest remainder). Per-frame budgets are
    refused (a segment's medoids may come from any of its frames). Passing both clusters and a
    budget is refused.

    Positions: medoids are real tokens, kept as they are, so they keep their own position ids.

    Deviations from the official code:

    * It runs on the LLM-input tokens (prefill) instead of inside the ViT, and without the [CLS]
      handling (per-segment mean of the frames' [CLS]) that CLIP needs and video LLMs lack.
    * The official code needs T divisible by the segment length; here the last segment may be
      shorter (it still keeps up to one frame's worth without a budget).
    * Segments are clustered one by one, each with its own stop test (officially a batch stops
      on the mean medoid shift of its segments).
    * Ties go to the lower index.

    Complexity: per segment of n tokens, O(n^2*D) for the distances, O(k*n) for the initialisation
    and O(n^2) per iteration.
    """

    segment_frames: int = 2
    clusters: int | None = None
    iterations: int = 100
    threshold: float = 1e-6
    distance: str = "euclidean"
    stage = "prefill"
    budget_knob = ("clusters", "clusters= (medoids per segment)")
    exact_budget = True  # a vtc budget is met exactly (see the docstring)
    whole_video_only = "picks medoids over whole segments of frames"

    def __post_init__(self) -> None:
        for knob in ("segment_frames", "iterations"):
            value = getattr(self, knob)
            if value < 1:
                raise ValueError(f"{knob} must be an int >= 1, got {value!r}")
        if self.clusters is not None and self.clusters < 1:
            raise ValueError(f"clusters (medoids per segment) must be an int >= 1, got {self.clusters!r}")
        if not self.threshold >= 0.0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        budget = self.resolve_budget(budget)
        groups = segments(tokens, self.segment_frames)
        parts = [torch.cat(frames) for frames in groups]
        sizes = [int(rows.numel()) for rows in parts]
        notes = []
        if budget.is_set:
            plan = apportion(sizes, budget.count(len(tokens)))
            if 0 in plan:
                notes.append(f"{plan.count(0)} segment(s) dropped whole: the budget is below the number of segments")
        elif self.clusters is not None:
            plan = [min(self.clusters, size) for size in sizes]
        else:
            plan = [max(int(rows.numel()) for rows in frames) for frames in groups]
        keep = []
        for rows, k in zip(parts, plan):
            medoids, _ = kmedoids(tokens.features[rows], k, metric=self.distance, iter_limit=self.iterations,
                                  threshold=self.threshold)
            keep.append(rows[medoids])
        return Selection(keep=torch.sort(torch.cat(keep)).values, notes=notes)
