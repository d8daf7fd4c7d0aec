"""DyCoke temporal token merging (TTM), the prefill stage of DyCoke.

Paper: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models"
(CVPR 2025). Official code: KD-TAO/DyCoke, ``dycole_ttm`` in ``llava/model/llava_arch.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens


def reference_frames(num_frames: int) -> list[int]:
    """The frame each frame is pruned against, or -1 for an anchor frame kept whole.

    Official plan: in pairs (i, i+1) frame i+1 is pruned against frame i; in windows of four
    starting at i (for i in range(0, T-4, 4)) frame i+2 is pruned against frame i instead of
    being kept. So the last window's frame i+2 is never pruned (kept as official). Fixed here:
    with odd T the unpaired last frame is an anchor (official: silently dropped), and T <= 4 has
    no window step (official: crashes on an empty stack).
    """
    refs = [-1] * num_frames
    for i in range(0, num_frames - 1, 2):
        refs[i + 1] = i
    for i in range(0, num_frames - 4, 4):
        refs[i + 2] = i
    return refs


def dycoke_ttm(features: torch.Tensor, keep: list[int], present: torch.Tensor | None = None) -> torch.Tensor:
    """Kept grid indices ``t*N + i`` of ``features`` [T, N, D], in DyCoke's output order.

    A pruned frame keeps its ``keep[t]`` tokens least cosine-similar to the same position in its
    reference frame, in ascending similarity (the official order; lower index on ties); a token
    whose reference is missing counts as most novel. An anchor frame keeps all its tokens in
    position order, or, when ``keep[t]`` is smaller (a budget below DyCoke's floor), ``keep[t]``
    evenly spaced ones. ``present`` [T, N] marks the grid cells that hold a token (all by default).
    """
    num_frames, n, _ = features.shape
    x = features.float()
    present = torch.ones(num_frames, n, dtype=torch.bool, device=x.device) if present is None else present
    refs = reference_frames(num_frames)
    pruned = torch.tensor([t for t in range(num_frames) if refs[t] >= 0], dtype=torch.long, device=x.device)
    similarity = torch.full((num_frames, n), float("-inf"), device=x.device)
    if pruned.numel():
        against = torch.tensor([refs[t] for t in pruned.tolist()], dtype=torch.long, device=x.device)
        sim = F.cosine_similarity(x[pruned], x[against], dim=-1)
        similarity[pruned] = sim.masked_fill(~present[against], float("-inf"))
    similarity = similarity.masked_fill(~present, float("inf"))
    out = []
    for t in range(num_frames):
        if refs[t] >= 0:
            chosen = torch.sort(similarity[t], stable=True).indices[: keep[t]]
        else:
            chosen = present[t].nonzero().flatten()
            if keep[t] < chosen.numel():
                spaced = (2 * torch.arange(keep[t], device=x.device) + 1) * chosen.numel() // (2 * max(keep[t], 1))
                chosen = chosen[spaced]
        out.append(chosen + t * n)
    return torch.cat(out)


def official_keep(counts: list[int], k: float) -> list[int]:
    """Tokens kept per frame for DyCoke's K (pruned fraction): ``int((1 - K) * N)`` in pruned frames."""
    refs = reference_frames(len(counts))
    return [n if ref < 0 else int((1 - k) * n) for n, ref in zip(counts, refs)]


def budget_keep(counts: list[int], total: int) -> tuple[list[int], str | None]:
    """Tokens kept per frame so that exactly ``total`` are kept, and a note when DyCoke's floor is hit.

    Anchor frames stay whole and the pruned frames share the rest evenly (one effective K; the
    remainder goes to the earlier frames). Below the floor (all anchor tokens), pruned frames keep
    nothing and the anchor frames share ``total`` evenly instead.
    """
    refs = reference_frames(len(counts))
    anchors = [t for t, ref in enumerate(refs) if ref < 0]
    pruned = [t for t, ref in enumerate(refs) if ref >= 0]
    floor = sum(counts[t] for t in anchors)
    keep = [0] * len(counts)
    note = None
    if total >= floor:
        for t in anchors:
            keep[t] = counts[t]
        share = _spread(total - floor, [counts[t] for t in pruned])
        for t, k in zip(pruned, share):
            keep[t] = k
    else:
        for t, k in zip(anchors, _spread(total, [counts[t] for t in anchors])):
            keep[t] = k
        note = (f"budget of {total} tokens is below DyCoke's floor of {floor} (anchor frames kept whole): "
                "non-anchor frames dropped, anchor frames evenly subsampled")
    return keep, note


def _spread(total: int, caps: list[int]) -> list[int]:
    """Split ``total`` (at most ``sum(caps)``) as evenly as possible under per-item caps.

    Water-filling: every item gets ``min(cap, level)`` for the highest level that fits; the few
    tokens left over go one each to the earliest items that still have room.
    """
    remaining, left, level = total, len(caps), max(caps, default=0)
    for cap in sorted(caps):
        if cap * left > remaining:
            level = remaining // left
            break
        remaining -= cap
        left -= 1
    alloc = [min(cap, level) for cap in caps]
    remaining = total - sum(alloc)
    for i, cap in enumerate(caps):
        extra = min(remaining, cap - alloc[i], 1)
        alloc[i] += extra
        remaining -= extra
    return alloc


@register("dycoke")
@dataclass
class DyCoke(Method):
    """Prune tokens that repeat the same position of an earlier frame (DyCoke TTM, prefill stage).

    Frames are grouped in pairs and windows of four temporal groups (``reference_frames``): anchor
    frames are kept whole; each other frame keeps only the ``int((1 - k) * N)`` tokens least
    cosine-similar to the same position in its reference frame. No averaging happens (the
    official "merging" only drops tokens). Default ``k`` 0.7 (lmms-eval; the official builder's
    default is 0.3). Kept tokens keep their original (t, h, w) position ids and spatial order (the
    official code re-packs positions and emits pruned frames in ascending-similarity order;
    ``dycoke_ttm`` returns that order). The decode-time KV-cache pruning of DyCoke is not part of
    this method.

    Budget: a vtc budget replaces ``k``: anchors stay whole and the pruned frames share the rest,
    so exactly ``budget.count(N)`` tokens are kept (``budget_keep``); below the anchors' total the
    pruned frames are dropped, anchor frames are evenly subsampled and a note says so. A
    per-frame budget contradicts whole anchor frames and is refused.

    Complexity: O(N D) for the similarities and O(N log N) for the per-frame ranking.

    Deviations from the official code (bugs fixed): with an odd number of frames the last frame is
    kept whole as an anchor (official: dropped); T <= 4 runs without the window step (official:
    crashes). Kept as official: the last window's frame i+2 is never pruned. Tokens missing from
    the grid (removed by an earlier method) are skipped, and a token whose reference is missing
    counts as novel; frames are the temporal groups present, so a frame removed earlier shifts
    the pairing. Ties keep the lower index.
    """

    k: float | None = None
    stage = "prefill"
    budget_knob = ("k", "k= (the paper's K)")
    exact_budget = True  # a vtc budget is met exactly (see the docstring)
    whole_video_only = "keeps anchor frames whole and prunes the others"

    DEFAULT_K = 0.7

    def __post_init__(self) -> None:
        if self.k is not None and not 0.0 <= self.k <= 1.0:
            raise ValueError(f"k (fraction pruned in each non-anchor frame) must be in [0, 1], got {self.k}")


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        _, height, width = tokens.grid
        frames, rank = torch.unique(tokens.frame, return_inverse=True)
        cell = tokens.coords[:, 1] * width + tokens.coords[:, 2]
        grid_index = rank * (height * width) + cell
        dense = tokens.features.new_zeros(frames.numel() * height * width, tokens.features.shape[1])
        dense[grid_index] = tokens.features
        present = torch.zeros(frames.numel() * height * width, dtype=torch.bool, device=dense.device)
        present[grid_index] = True
        counts = torch.bincount(rank, minlength=frames.numel()).tolist()
        notes = []
        if budget.is_set:
            keep, note = budget_keep(counts, budget.count(len(tokens)))
            notes += [note] if note else []
        else:
            keep = official_keep(counts, self.DEFAULT_K if self.k is None else self.k)
        kept = dycoke_ttm(dense.view(frames.numel(), height * width, -1), keep,
                          present.view(frames.numel(), height * width))
        row_of_cell = torch.full_like(present, -1, dtype=torch.long)
        row_of_cell[grid_index] = torch.arange(len(tokens), device=dense.device)
        return Selection(keep=torch.sort(row_of_cell[kept]).values, notes=notes)
