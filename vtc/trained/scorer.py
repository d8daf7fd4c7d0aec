"""Learned token scorer: a light mask generator that keeps the top-scoring visual tokens.

After S5 (selective structured state-space video models, Wang et al. CVPR 2023: a light mask
generator scores tokens for input-dependent masking) and EVAD (Chen et al. ICCV 2023: keyframe-
centric token dropout, motion relative to the keyframe), here as a prefill-stage method on the
LLM-input visual tokens, conditioned on the question.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..budget import Budget
from ..tokens import Selection, VisualTokens
from .base import TrainedCompressor, hard_top_k, init_linear, previous_frame_rows, straight_through_top_k
from .question import QuestionAttention


class LearnedScorer(TrainedCompressor):
    """Score each token from its feature, its difference to the same cell one frame earlier and the question.

    score = w . gelu(A(x) + B(x - x_prev) + C + A(x) * C), with C the token's attention over the
    question words (QuestionAttention). Inference keeps the exact top-k (ties: lower row first);
    training keeps a Gumbel-perturbed top-k of the same size and passes gradients through a
    straight-through sigmoid gate on the kept features (``straight_through_top_k``), whose value
    is exactly 1, so train and eval feed the LLM the same features for the same selection.

    Deviations: S5 trains its mask generator with a reinforcement-style objective inside an SSM
    and EVAD ranks tokens by ViT attention; vtc trains one scorer end to end through the LLM loss
    (plus, in ``vtc train``, an optional auxiliary loss on the dataset's evidence boxes). Kept tokens
    keep their original (t, h, w) position ids; nothing is merged.
    """

    kind = "scorer"
    needs = frozenset({"query"})

    def __init__(self, hidden_size: int, retain: float, width: int = 64, temperature: float = 0.5) -> None:
        super().__init__(hidden_size, retain)
        self.width, self.temperature = int(width), float(temperature)
        self.feature_norm = nn.LayerNorm(hidden_size)
        self.diff_norm = nn.LayerNorm(hidden_size)
        self.feature = init_linear(nn.Linear(hidden_size, width))
        self.motion = init_linear(nn.Linear(hidden_size, width))
        self.question = QuestionAttention(hidden_size, width)
        self.out = init_linear(nn.Linear(width, 1))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "temperature": self.temperature}

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        x = self.check_features(tokens)
        previous = previous_frame_rows(tokens).to(x.device)
        diff = torch.where(previous[:, None] >= 0, x - x[previous.clamp(min=0)], torch.zeros_like(x))
        feature = self.feature(self.feature_norm(x))
        context = self.question(feature, tokens)
        hidden = torch.nn.functional.gelu(feature + self.motion(self.diff_norm(diff)) + context + feature * context)
        return self.out(hidden).squeeze(-1)

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        count = self.resolve_budget(budget).count(len(tokens))
        scores = self.score(tokens)
        if not self.training:
            return Selection(keep=hard_top_k(scores.detach(), count).to(tokens.features.device))
        self.last_scores.append((tokens.source, scores))
        keep, gate = straight_through_top_k(scores, count, self.temperature, self.noise_generator)
        keep = keep.to(tokens.features.device)
        features = tokens.features[keep] * gate[:, None].to(tokens.features.device, tokens.features.dtype)
        return Selection(keep=keep, features=features)
