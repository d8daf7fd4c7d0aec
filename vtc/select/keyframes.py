"""KFFocus-style keyframes: codec-inspired temporal redundancy decides which frames carry new content."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import top_k_stable
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, token_budget, unit_novelty


@register("keyframes")
@dataclass
class Keyframes(Selector):
    """Before the encoder: keep the frame groups that carry the most new content, keyframes with more tokens.

    KFFocus (no official code) treats video like a codec does: an I-frame starts where the
    previous frames cannot predict the current one, P-frames repeat what came before. Here a
    frame's novelty is its mean absolute difference to the closest of its ``references``
    predecessors (multi-reference prediction), a group is as novel as its newest frame, and the
    container's own keyframes (decord's key indices, ``VideoProcessor`` path) count as maximally
    novel. The most novel groups are keyframes and keep every token; with ``context_share`` > 0 the
    remaining budget goes to further groups at that fraction of their tokens (evenly strided over
    the frame), in novelty order, so predicted frames still give temporal context at a lower rate.
    When every group fits as context and budget is left, the most novel context groups become
    keyframes until it is spent (less than one group's difference left).

    Deviations: KFFocus's spatiotemporal condensation module is trained; vtc keeps a strided subset
    instead. Token shares apply inside ``vtc.wrap``; the ``VideoProcessor`` path takes one resolution
    per video, so there every kept group keeps all its tokens (``context_share`` is ignored there
    and the stats say so).
    """

    references: int = 2
    keyframe_share: float = 0.5
    context_share: float = 0.25
    whole_video_only = "chooses whole frames"

    def __post_init__(self) -> None:
        if self.references < 1:
            raise ValueError(f"references must be >= 1, got {self.references}")
        if not 0.0 < self.keyframe_share <= 1.0:
            raise ValueError(f"keyframe_share must be in (0, 1], got {self.keyframe_share}")
        if not 0.0 <= self.context_share <= 1.0:
            raise ValueError(f"context_share must be in [0, 1], got {self.context_share}")

    def novelty(self, frames: Frames) -> torch.Tensor:
        score = unit_novelty(frames.thumbs, self.references)
        finite = score[torch.isfinite(score)]
        top = float(finite.max()) + 1.0 if finite.numel() else 1.0
        score = torch.where(torch.isfinite(score), score, torch.full_like(score, top))
        return torch.where(frames.keyframe.to(score.device), torch.full_like(score, top), score)

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        notes: list[str] = []
        total = token_budget(budget, len(frames), cost)
        per_unit = cost.full
        order = top_k_stable(self.novelty(frames), len(frames))
        use_shares = cost.shares and self.context_share > 0
        if not use_shares and self.context_share > 0 and not cost.shares:
            notes.append("context_share ignored: this path keeps whole frame groups")
        key_budget = total if not use_shares or total < per_unit else max(per_unit, int(total * self.keyframe_share))
        n_key = min(len(frames), affordable_units(self.name, budget, key_budget, per_unit, notes))
        if use_shares:
            context_tokens = max(1, round(self.context_share * per_unit))
            if per_unit > context_tokens:  # every group fits as context: spend the rest on more keyframes
                promoted = (total - len(frames) * context_tokens) // (per_unit - context_tokens)
                n_key = max(n_key, min(len(frames), promoted))
        keep, shares = order[:n_key].tolist(), [1.0] * n_key
        if use_shares:
            spare = total - n_key * per_unit
            n_context = min(len(frames) - n_key, max(0, spare // context_tokens))
            keep += order[n_key : n_key + n_context].tolist()
            shares += [context_tokens / per_unit] * n_context
        ranked = torch.tensor(keep, dtype=torch.long, device=frames.times.device)
        share = torch.tensor(shares, dtype=torch.float32, device=frames.times.device)
        sort = torch.argsort(ranked)
        return Plan(keep=ranked[sort], share=share[sort] if use_shares else None, notes=notes)
