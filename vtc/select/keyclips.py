"""F2C (From Frames to Clips): relevant anchor frames grown into short clips, resolution traded for length."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import top_k_stable
from ..registry import register
from .base import Frames, Plan, Selector, UnitCost, affordable_units, cosine, frame_novelty, require_query, token_budget


DEFAULT_CLIP_LENGTH = 4  # frame groups (8 frames on Qwen): a couple of seconds at the usual 2 fps


@register("keyclips")
@dataclass
class KeyClips(Selector):
    """Before the encoder: anchor frames by relevance, grow each into a clip, lower resolution to fit the budget.

    F2C (Sun et al., 2025; no official code). vtc's reading of the paper:
      1. Relevance per frame group: cosine between pooled visual features and the question
         (``relevance="query"``, the paper's CLIP/SigLIP score; here the wrapped model's own
         features), or codec-style novelty (``relevance="novelty"``) when no question applies: a
         group's most novel frame, where the first frame, having nothing to be novel against,
         scores 0 (an anchor marks where something happens, and frame 0 would otherwise always win).
      2. Anchors: frame-wise selection would afford K = budget // tokens-per-group groups at full
         resolution; anchors are the K most relevant groups, taken greedily with temporal
         suppression (an anchor's clip may not overlap another's), the paper's relevance+diversity.
      3. Clips and resolution: each anchor grows into a clip of L = ``clip_length`` groups centred
         on it (default 4 groups, or the whole video if shorter). The spatial scale is lowered (largest offered scale with K * L * tokens(scale) <=
         budget) so K clips fit the budget; when even the smallest scale cannot, the anchor count
         drops, and only at one anchor is the clip shortened (adaptive clip length).
      4. Leftover budget (clips clipped at the video's ends or merged) grows clips outward around
         the most relevant anchors first.
    Inside ``vtc.wrap`` the pixels are already processed, so only scale 1.0 exists and the trade is
    between the number of clips and their length: F2C without its resolution trade, which on the
    1,024-token synthetic tier scores 0.600 at retain 0.5 inside ``wrap`` against 0.917 through
    ``vtc.VideoProcessor`` (``eval/results/select_processor_scale.md``). Clip lengths count temporal token groups (2
    frames each on Qwen). A video shorter than an explicitly requested clip length is refused.
    """

    relevance: str = "query"
    clip_length: int | None = None
    whole_video_only = "chooses whole frames"

    def __post_init__(self) -> None:
        if self.relevance not in ("query", "novelty"):
            raise ValueError(f"relevance must be 'query' or 'novelty', got {self.relevance!r}")
        if self.clip_length is not None and self.clip_length < 1:
            raise ValueError(f"clip_length must be >= 1 frame group, got {self.clip_length}")

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"query"}) if self.relevance == "query" else frozenset()

    def relevance_scores(self, frames: Frames) -> torch.Tensor:
        if self.relevance == "query":
            require_query(self.name, frames)
            return cosine(frames.features, frames.query)
        novelty = frame_novelty(frames.thumbs)
        novelty = torch.where(torch.isfinite(novelty), novelty, torch.zeros_like(novelty))
        return novelty.view(len(frames), -1).amax(dim=1)

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        if self.clip_length is not None and len(frames) < self.clip_length:
            raise ValueError(
                f"keyclips: the video has {len(frames)} frame groups, shorter than clip_length={self.clip_length}; "
                "lower clip_length or give more frames"
            )
        length = self.clip_length or min(DEFAULT_CLIP_LENGTH, len(frames))
        notes: list[str] = []
        total = token_budget(budget, len(frames), cost)
        anchors = affordable_units(self.name, budget, total, cost.full, notes)
        scale, length, anchors = self._shape(total, anchors, length, cost)
        relevance = self.relevance_scores(frames)
        chosen = self._anchors(relevance, anchors, length)
        per_unit = int(cost.tokens_at(scale))
        capacity = max(1, total // per_unit)
        keep = self._grow(chosen, relevance, length, capacity, len(frames))
        return Plan(keep=keep, scale=scale, notes=notes + [f"{len(chosen)} clips of <= {length} groups at scale {scale:g}"])

    @staticmethod
    def _shape(total: int, anchors: int, clip_length: int, cost: UnitCost) -> tuple[float, int, int]:
        """(scale, clip length, anchors): lower resolution first, then fewer clips, then shorter clips."""
        scales = sorted(cost.scales, reverse=True)
        for length in range(clip_length, 0, -1):
            for count in range(anchors, 0, -1):
                for scale in scales:
                    if count * length * cost.tokens_at(scale) <= total:
                        return scale, length, count
        return scales[-1], 1, 1

    @staticmethod
    def _anchors(relevance: torch.Tensor, count: int, length: int) -> list[int]:
        """Most relevant groups first, skipping any whose clip would overlap an earlier anchor's."""
        chosen: list[int] = []
        for unit in top_k_stable(relevance, relevance.numel()).tolist():
            if all(abs(unit - other) >= length for other in chosen):
                chosen.append(unit)
                if len(chosen) == count:
                    break
        return chosen

    @staticmethod
    def _grow(anchors: list[int], relevance: torch.Tensor, length: int, capacity: int, units: int) -> torch.Tensor:
        """Clips of ``length`` around each anchor, then outward growth (best anchor first) up to ``capacity``."""
        keep: set[int] = set()
        spans = []
        for anchor in anchors:
            start = min(max(0, anchor - (length - 1) // 2), units - length)
            spans.append([start, start + length - 1])
            keep.update(range(start, start + length))
        grew = True
        while len(keep) < capacity and grew:
            grew = False
            for span in spans:
                for side in (1, 0):
                    if len(keep) >= capacity:
                        break
                    nxt = span[1] + 1 if side else span[0] - 1
                    if 0 <= nxt < units and nxt not in keep:
                        keep.add(nxt)
                        span[side] = nxt
                        grew = True
        return torch.tensor(sorted(keep), dtype=torch.long, device=relevance.device)
