"""VisionZip: keep each frame's dominant tokens by [CLS] attention, merge the rest into a few contextual tokens.

Paper: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (CVPR 2025).
Official code: dvlab-research/VisionZip (``CLIPVisionTower_VisionZip.forward``, ``visionzip(model, dominant,
contextual)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget, apportion
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens

# The official default 54 + 10 tokens of 64: a vtc budget is split between the two kinds in that proportion.
DOMINANT_SHARE = 54 / 64


@register("visionzip")
@dataclass
class VisionZip(Method):
    """Inside the vision tower, keep each frame's most-attended tokens and merge the rest into a few contextual ones.

    Per frame, at a vision-tower layer: the ``dominant`` tokens the [CLS] query attends to most (attention
    summed over heads) stay as they are; of the rest, ``contextual`` targets evenly spaced *by position*
    each absorb the remaining tokens whose keys (head-averaged, L2-normalised) are most cosine-similar to
    theirs, as ``target + mean(absorbed)`` (the official sum, not an average).

    Knobs: the paper's per-frame counts ``dominant`` and ``contextual`` (official 54 + 10; with a [CLS]
    tower ``dominant`` includes the [CLS], as ``visionzip(model, dominant=54)`` does), or a vtc budget,
    split 54:64 between dominant and contextual tokens in each frame (a video-level budget is shared
    over frames in proportion to their sizes). ``layer``: the vision block whose attention, keys and
    output it reads (official: the penultimate, -2, whose output is LLaVA's feature layer).

    Deviations, by design of vtc: kept tokens stay in place and keep their position ids (a contextual
    token takes its target's), where the official code emits dominant tokens and then contextual ones.
    On towers without a [CLS] (the Qwen ViTs) the dominant score is the attention of the frame's mean
    query (the pseudo-[CLS] of FastVID's ATS) over each merge unit's mean key, and the keys are averaged
    over a unit's patches; the stats say so. What runs where: ``vtc list --markdown`` (stage "vision").
    """

    dominant: int | None = None
    contextual: int | None = None
    layer: int = -2
    stage = "vision"
    needs = frozenset({"vision_saliency", "vision_keys"})
    budget_knob = ("dominant", "dominant=/contextual= (the paper's per-frame counts)")
    exact_budget = True

    DEFAULT_DOMINANT = 54
    DEFAULT_CONTEXTUAL = 10

    def __post_init__(self) -> None:
        if self.dominant is not None and self.dominant < 1:
            raise ValueError(f"dominant (tokens per frame kept by attention) must be >= 1, got {self.dominant}")
        if self.contextual is not None and self.contextual < 0:
            raise ValueError(f"contextual (merged tokens per frame) must be >= 0, got {self.contextual}")
        if self.contextual is not None and self.dominant is None:
            raise ValueError("visionzip: give contextual= together with dominant= (the paper's pair), or a budget")

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if tokens.vision_saliency is None or tokens.vision_keys is None:
            raise ValueError("visionzip needs the vision tower's attention and keys; it only runs at the vision stage")
        frames = tokens.frames()
        counts = self._frame_counts([rows.numel() for rows in frames], budget, tokens.vision_cls)
        keep, features, merged_into, offset = [], [], torch.full((len(tokens),), -1, dtype=torch.long), 0
        merged_into = merged_into.to(tokens.features.device)
        changed = False
        for rows, (dominant, contextual) in zip(frames, counts):
            kept, merged, link = zip_frame(
                tokens.vision_saliency[rows], tokens.vision_keys[rows], tokens.features[rows], dominant, contextual
            )
            changed |= merged is not None
            keep.append(rows[kept])
            features.append(tokens.features[rows[kept]] if merged is None else merged)
            merged_into[rows] = torch.where(link >= 0, link + offset, -1)
            offset += kept.numel()
        order = torch.argsort(torch.cat(keep))
        keep_all = torch.cat(keep)[order]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        merged_into = torch.where(merged_into >= 0, rank[merged_into.clamp(min=0)], -1)
        return Selection(
            keep=keep_all, features=torch.cat(features)[order] if changed else None, merged_into=merged_into,
        )

    def _frame_counts(self, sizes: list[int], budget: Budget, has_cls: bool) -> list[tuple[int, int]]:
        """(dominant, contextual) patch tokens per frame."""
        if not budget.is_set:
            dominant = self.DEFAULT_DOMINANT if self.dominant is None else self.dominant
            contextual = self.DEFAULT_CONTEXTUAL if self.contextual is None else self.contextual
            patches = dominant - 1 if has_cls else dominant  # the [CLS] is one of the dominant tokens
            return [(min(patches, n), min(contextual, max(n - patches, 0))) for n in sizes]
        totals = (
            [budget.count(n) for n in sizes] if budget.scope == "frame" else apportion(sizes, budget.count(sum(sizes)))
        )
        return [(d, k - d) for k in totals for d in [min(k, max(1, round(k * DOMINANT_SHARE))) if k else 0]]


def split_frame(
    score: torch.Tensor, keys: torch.Tensor, dominant: int, contextual: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame's decision over its M patch tokens (no [CLS]): the dominant rows (in score order), the
    contextual targets (ascending), the rows merged into them and, per merged row, its target's slot."""
    empty = torch.zeros(0, dtype=torch.long, device=score.device)
    dominant_rows = top_k_stable(score, dominant)
    rest = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    rest[dominant_rows] = False
    remaining = rest.nonzero().flatten()  # ascending, as the official masked_select
    if contextual == 0 or not remaining.numel():
        return dominant_rows, empty, empty, empty
    step = max(1, remaining.numel() // contextual)
    slots = torch.arange(0, remaining.numel(), step, device=score.device)[:contextual]
    others = torch.ones(remaining.numel(), dtype=torch.bool, device=score.device)
    others[slots] = False
    targets, merged = remaining[slots], remaining[others]
    if not merged.numel():
        return dominant_rows, targets, empty, empty
    metric = keys.float() / keys.float().norm(dim=-1, keepdim=True)
    return dominant_rows, targets, merged, (metric[merged] @ metric[targets].T).argmax(dim=1)  # first target wins


def zip_frame(
    score: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor, dominant: int, contextual: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One frame's VisionZip over its M patch tokens (no [CLS]).

    Returns the kept rows (sorted), their features when any token was merged (else None: nothing
    changed), and per row the position in the kept rows its features went to (-1: dropped).
    """
    dominant_rows, targets, merged, assign = split_frame(score, keys, dominant, contextual)
    kept = torch.sort(torch.cat([dominant_rows, targets])).values
    position = torch.full((score.numel(),), -1, dtype=torch.long, device=score.device)
    position[kept] = torch.arange(kept.numel(), device=score.device)
    if not merged.numel():
        return kept, None, position
    target_position = position[targets]
    position[merged] = target_position[assign]
    sums = hidden.new_zeros(targets.numel(), hidden.shape[1]).index_add_(0, assign, hidden[merged])
    counts = torch.bincount(assign, minlength=targets.numel()).clamp(min=1).to(hidden.dtype)
    features = hidden[kept].clone()
    features[target_position] = hidden[targets] + sums / counts[:, None]
    return kept, features, position
