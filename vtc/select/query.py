"""B-VLLM-style query-aware frame selection, training-free: frames scored against the question."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import top_k_stable
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, cosine, require_query, token_budget


@register("query")
@dataclass
class QueryFrames(Selector):
    """Before the encoder (or, inside wrap, the LLM): keep the frame groups closest to the question, merging near-duplicates.

    B-VLLM scores frames by their [CLS] feature against the text query, keeps the top ones and
    merges near-duplicate selected frames; its selector is trained. This is the training-free form
    the paper's plug-in reading allows: the score is the cosine between a group's pooled visual
    features and the pooled embedding of the question, both from the wrapped model itself
    (``vtc.VideoProcessor`` takes any other ``scorer``). Picks go in score order; a candidate whose
    features are closer than ``duplicate`` (cosine of features centred on the video's mean, since
    pooled features of one video are all alike before centring) to an already kept group is merged
    into it (skipped), so the budget goes to different content. Needs the question, so inside ``vtc.wrap``
    every frame is encoded before it decides (it saves LLM tokens, not encoder time).
    """

    duplicate: float = 0.9
    needs = frozenset({"query"})
    whole_video_only = "chooses whole frames"

    def __post_init__(self) -> None:
        if not -1.0 <= self.duplicate <= 1.0:
            raise ValueError(f"duplicate is a cosine threshold in [-1, 1], got {self.duplicate}")

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        require_query(self.name, frames)
        notes: list[str] = []
        count = affordable_units(self.name, budget, token_budget(budget, len(frames), cost), cost.full, notes)
        centred = frames.features.float() - frames.features.float().mean(dim=0, keepdim=True)
        features = torch.nn.functional.normalize(centred, dim=-1)
        kept: list[int] = []
        merged = 0
        for unit in top_k_stable(cosine(frames.features, frames.query), len(frames)).tolist():
            if kept and float((features[kept] @ features[unit]).max()) > self.duplicate:
                merged += 1
                continue
            kept.append(unit)
            if len(kept) == count:
                break
        if merged:
            notes.append(f"{merged} near-duplicate groups merged into kept ones")
        if len(kept) < count:
            notes.append(f"only {len(kept)} distinct groups for a budget of {count}")
        return Plan(keep=torch.tensor(sorted(kept), dtype=torch.long, device=frames.times.device), notes=notes)
