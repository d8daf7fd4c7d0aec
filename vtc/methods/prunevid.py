"""PruneVid, outer stage: temporal segments by frame clustering, static tokens merged over time, spatial clustering.

Paper: Huang et al., "PruneVid: Visual Token Pruning for Efficient Video Large Language Models"
(2024). Official code: Visual-AI/PruneVid, ``models/pllava/modeling_pllava.py``
(``merge_frames_dynamic``, ``spatial_merge_tokens``, ``compute_cluster_vectors``,
``cluster_dpc_knn``, ``refine_clusters``, ``segment_lengths``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget, apportion
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens
from .clustering import assign_to_nearest, density_peaks
from .frames import merged_positions, whole_frames
from .thresholds import lowest_fitting_threshold

DEFAULT_CLUSTER_RATIO = 0.5
CLUSTER_ABOVE = 14  # official: only groups of more than 14 tokens are clustered


@dataclass
class PruneVidResult:
    """Outputs of :func:`prunevid_merge`; every output token is the plain mean of its members."""

    out_features: torch.Tensor  # [M, C] float32, official order
    token_to_out: torch.Tensor  # [T*L] output row each input token is averaged into (-1: dropped)
    window_sizes: list[int]
    static_sizes: list[int]
    dynamic_sizes: list[int]  # per window, all frames together
    labels_raw: torch.Tensor  # [T] DPC-KNN cluster id of each frame
    labels_refined: torch.Tensor  # [T] after refine_clusters
    temporal_clusters: int  # clusters actually used for the frames (after clamping)
    temporal_k: int  # neighbours actually used for the frame density (after clamping)
    tau: float  # the static threshold used (raised above the one asked when merging would undercut ``count``)
    left_at_tau: int  # tokens static merging leaves at the threshold asked


def ranked_clusters(x: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """DPC-KNN labels of the rows of ``x``: cluster id = rank of its centre by descending score."""
    peaks = density_peaks(x, k)
    centres = torch.sort(peaks.score, descending=True, stable=True).indices[:n]
    return assign_to_nearest(peaks.distance, centres)


def runs(labels: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of equal values as inclusive (start, end)."""
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((start, i - 1))
            start = i
    return out


def refine_clusters(labels: list[int]) -> list[int]:
    """The official refinement: keep each label's longest run(s), give the rest to the longer neighbouring run.

    All runs tied at a label's maximal length survive; a label whose runs all have length 1 is
    dissolved. Every dissolved run (left to right, on the partly relabelled sequence) takes the
    label of the longer neighbouring run, the left one on ties, label 0 with no neighbours.
    """
    refined = list(labels)
    by_label: dict[int, list[tuple[int, int]]] = {}
    for s, e in runs(labels):
        by_label.setdefault(labels[s], []).append((s, e))
    for segments in by_label.values():
        longest = max(e - s + 1 for s, e in segments)
        for s, e in segments:
            if longest == 1 or e - s + 1 < longest:
                refined[s : e + 1] = [-1] * (e - s + 1)
    n = len(refined)
    for s, e in runs(refined):
        if refined[s] != -1:
            continue
        left = right = None
        left_len = right_len = 0
        if s > 0:
            left = refined[s - 1]
            i = s - 1
            while i >= 0 and refined[i] == left:
                i -= 1
            left_len = s - 1 - i
        if e < n - 1:
            right = refined[e + 1]
            i = e + 1
            while i < n and refined[i] == right:
                i += 1
            right_len = i - e - 1
        label = right if right_len > left_len else (left if left is not None else right)
        refined[s : e + 1] = [0 if label is None else label] * (e - s + 1)
    return refined


def prunevid_merge(
    features: torch.Tensor,
    *,
    tau: float,
    temporal_segment_ratio: float,
    cluster_ratio: float,
    k: int = 7,
    count: int | None = None,
) -> PruneVidResult:
    """PruneVid's outer stage on ``features`` [T, L, C] (frames of raster-ordered tokens); float32.

    Without ``count`` this is the official computation (groups of more than 14 tokens clustered
    into int(n*cluster_ratio)); with ``count`` every group (each window's static tokens, each
    frame's dynamic tokens) gets its share of exactly ``count`` outputs (:func:`apportion`) and is
    clustered whenever that share is below its size, and when static merging at ``tau`` would
    leave fewer than ``count`` tokens, ``tau`` is raised to the lowest threshold at which it leaves
    enough (:func:`lowest_fitting_threshold`). Fixes: k and the frame-cluster count are
    clamped to what T allows, a one-frame window has no static tokens (officially 0/0), and a
    clustered group gets at least one cluster.
    """
    t, n, dim = features.shape
    x = features.float()
    device = x.device
    temporal_k = min(k, t)
    temporal_clusters = min(max(int(t * temporal_segment_ratio), 1), t)
    labels_raw = ranked_clusters(x.mean(dim=1), temporal_clusters, temporal_k)
    refined = refine_clusters(labels_raw.tolist())
    windows = runs(refined)

    similarity = []  # per window: each position's mean pairwise cosine over the window's frames
    for s, e in windows:
        w = e - s + 1
        if w == 1:
            similarity.append(torch.full((n,), -torch.inf, device=device))  # never static
            continue
        total = F.normalize(x[s : e + 1], p=2, dim=-1).sum(dim=0)
        similarity.append(((total * total).sum(dim=-1) - w) / (w * (w - 1)))
    similarity_all = torch.stack(similarity)
    saved_per_token = torch.tensor([e - s for s, e in windows], dtype=torch.long, device=device)[:, None]

    def left(threshold: float | torch.Tensor) -> int:
        return t * n - int((saved_per_token * (similarity_all > threshold)).sum())

    left_at_tau = left(tau)
    if count is not None and left_at_tau < count:
        tau = lowest_fitting_threshold(similarity_all, tau, lambda c: left(c) >= count)
    masks = list(similarity_all > tau)

    groups: list[tuple[torch.Tensor, int, bool]] = []  # ([W_g, n_g] input rows t*L+p, one token per column; window; static)
    positions = torch.arange(n, device=device)
    for index, ((s, e), mask) in enumerate(zip(windows, masks)):
        frames = torch.arange(s, e + 1, device=device)[:, None]
        groups.append((frames * n + positions[mask][None, :], index, True))
        for f in range(s, e + 1):
            groups.append(((f * n + positions[~mask])[None, :], index, False))
    sizes = [int(rows.shape[1]) for rows, _, _ in groups]
    if count is None:
        plan = [max(int(size * cluster_ratio), 1) if size > CLUSTER_ABOVE else size for size in sizes]
    else:
        plan = apportion(sizes, count)

    flat = x.reshape(t * n, dim)
    token_to_out = torch.full((t * n,), -1, dtype=torch.long, device=device)
    static_sizes = [0] * len(windows)
    dynamic_sizes = [0] * len(windows)
    offset = 0
    for (rows, window, static), size, out in zip(groups, sizes, plan):
        if out == 0:
            continue
        if out < size:
            label = ranked_clusters(flat[rows].mean(dim=0), out, min(k, size))
        else:
            label = torch.arange(size, device=device)
        token_to_out[rows] = offset + label[None, :].expand_as(rows)
        offset += out
        (static_sizes if static else dynamic_sizes)[window] += out
    kept = token_to_out >= 0
    sums = torch.zeros(offset, dim, dtype=torch.float32, device=device).index_add_(0, token_to_out[kept], flat[kept])
    counts = torch.bincount(token_to_out[kept], minlength=offset).to(torch.float32)[:, None]
    return PruneVidResult(
        out_features=sums / counts,
        token_to_out=token_to_out,
        window_sizes=[e - s + 1 for s, e in windows],
        static_sizes=static_sizes,
        dynamic_sizes=dynamic_sizes,
        labels_raw=labels_raw,
        labels_refined=torch.tensor(refined, dtype=torch.long, device=device),
        temporal_clusters=temporal_clusters,
        temporal_k=temporal_k,
        tau=float(tau),
        left_at_tau=left_at_tau,
    )


@register("prunevid")
@dataclass
class PruneVid(Method):
    """PruneVid outer stage: frame clustering into segments, static tokens merged over time, spatial DPC-KNN.

    Paper: Huang et al., "PruneVid: Visual Token Pruning for Efficient Video Large Language Models"
    (2024); defaults from the official config: tau 0.8, temporal_segment_ratio 0.25,
    cluster_ratio 0.5, k = 7 neighbours (hard-coded officially).

    1. DPC-KNN on the T frame-mean features into int(T*temporal_segment_ratio) clusters, then
       ``refine_clusters`` (each label keeps its longest run(s); the other runs join the longer
       neighbouring run); windows = runs of equal labels.
    2. In a window of W frames, a position is static when its mean pairwise cosine over the W
       frames exceeds tau. Static tokens are averaged over the window; dynamic ones stay per frame.
    3. Each group of more than 14 tokens (a window's static tokens, a frame's dynamic tokens) is
       DPC-KNN clustered (k = 7) into int(n*cluster_ratio) clusters; every output token is the
       plain mean of its members (centre included).

    Budget: ``cluster_ratio`` is the paper's knob (default 0.5 with no budget). A vtc budget
    replaces it and is met exactly: the groups share ``budget.count(N)`` outputs, one per non-empty
    group and the rest in proportion to their sizes (:func:`~vtc.budget.apportion`; the
    retain fraction thus maps to an effective cluster ratio of count / tokens left after static
    merging), and every group whose share is
    below its size is clustered, whatever its size (the official "more than 14" rule would
    overshoot small budgets). With fewer outputs than groups, the smallest groups are dropped and
    that is noted. Per-frame budgets are refused (static tokens stand for whole windows). Passing
    both cluster_ratio and a budget is refused.

    Static content: merging every static position over its window can leave fewer tokens than the
    budget (a mostly static 64 x 196 video: 958 tokens whatever the budget). PruneVid's token count
    is set by its thresholds and ratios; the paper ablates ``tau`` as the knob for how much is
    merged, so vtc raises ``tau`` to the lowest threshold at which static merging leaves at least
    the budget (only the most similar positions of each window are merged), clusters down to it as
    usual, and a note gives both thresholds. The windows (frame clustering) do not depend on
    ``tau`` and stay as they are. Without a budget (``cluster_ratio``) the official computation is kept.

    Positions: PLLaVA re-packs the sequence, so the official code has none. vtc gives each output
    token the position ids of its earliest member row (lowest frame, then raster order); for a
    static token that is its first member position in the window's first frame.

    Deviations from the official code (bugs fixed, no vector run depends on them):

    * k = 7 needs T >= 7 frames (torch.topk raises): the frame density uses min(k, T) neighbours;
      int(T*temporal_segment_ratio) == 0 crashes too: at least one frame cluster. Both are noted.
    * A one-frame window makes the static test 0/0 (a random per-token result): such a window has
      no static tokens, every token is dynamic. ``refine_clusters`` leaves runs of at least two
      frames, so this only happens for a one-frame video.
    * int(n*cluster_ratio) == 0 for a group of more than 14 tokens crashes: at least one cluster.
    * Ties (density scores) go to the lower index; the official density adds U(0, 1e-6) noise
      instead, and the reference vectors do not depend on it.
    * The LLM-stage part (question-relevant tokens at layer 10, alpha 0.4, and the KV-cache
      pruning) is not implemented.

    Complexity: frame clustering O(T^2*C); static test O(W*L*C) per window; spatial clustering
    O(n^2*C) per group (n <= L).
    """

    tau: float = 0.8
    temporal_segment_ratio: float = 0.25
    cluster_ratio: float | None = None
    k: int = 7
    stage = "prefill"
    exact_budget = True  # a vtc budget is met exactly, static content included (see the docstring)
    budget_knob = ("cluster_ratio", "cluster_ratio= (the paper's knob)")
    whole_video_only = "merges static tokens over whole windows of frames"

    def __post_init__(self) -> None:
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau is a cosine threshold: it must be in [-1, 1], got {self.tau}")
        if not 0.0 < self.temporal_segment_ratio <= 1.0:
            raise ValueError(f"temporal_segment_ratio must be in (0, 1], got {self.temporal_segment_ratio}")
        if self.cluster_ratio is not None and not 0.0 < self.cluster_ratio <= 1.0:
            raise ValueError(f"cluster_ratio must be in (0, 1], got {self.cluster_ratio}")
        if self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        budget = self.resolve_budget(budget)
        rows = whole_frames(tokens, self.name)
        count = budget.count(len(tokens)) if budget.is_set else None
        ratio = DEFAULT_CLUSTER_RATIO if self.cluster_ratio is None else self.cluster_ratio
        result = prunevid_merge(
            tokens.features[rows].float(), tau=self.tau, temporal_segment_ratio=self.temporal_segment_ratio,
            cluster_ratio=ratio, k=self.k, count=count,
        )
        frames = rows.shape[0]
        notes = []
        if result.temporal_k < self.k:
            notes.append(f"frame clustering: k={self.k} neighbours clamped to the {frames} frames present")
        if result.temporal_clusters != int(frames * self.temporal_segment_ratio):
            notes.append(f"frame clustering: {result.temporal_clusters} cluster(s) for {frames} frames "
                         f"(int({frames}*{self.temporal_segment_ratio}) is not usable)")
        if result.tau != self.tau:
            notes.append(f"tau raised from {self.tau:g} to {result.tau:.4f}: static merging at {self.tau:g} leaves "
                         f"{result.left_at_tau} tokens, fewer than the budget of {count}")
        kept_out = result.out_features.shape[0]
        flat_rows = rows.flatten()
        member = result.token_to_out >= 0
        if not bool(member.all()):
            notes.append(f"{int((~member).sum())} tokens dropped whole: the budget is below the number of token groups")
        first = torch.full((kept_out,), flat_rows.numel(), dtype=torch.long, device=flat_rows.device)
        grid_index = torch.arange(flat_rows.numel(), device=flat_rows.device)
        first.scatter_reduce_(0, result.token_to_out[member], grid_index[member], reduce="amin")
        keep = flat_rows[first]
        order = torch.argsort(keep)
        return Selection(keep=keep[order], features=result.out_features[order].to(tokens.features.dtype), notes=notes,
                         merged_into=merged_positions(flat_rows, result.token_to_out, order, len(tokens)))
