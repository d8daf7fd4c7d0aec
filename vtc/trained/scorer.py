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
from ..cells import cell_means, relative_time, same_cell_rows
from ..tokens import Selection, VisualTokens
from .base import TrainedCompressor, hard_top_k, init_linear, straight_through_top_k
from .question import QuestionAttention

TIME_FREQUENCIES = 4


class LearnedScorer(TrainedCompressor):
    """Score each token from its feature, the question and how its (h, w) cell changes over time; with
    ``annotate``, also tell the LLM how each kept token's cell changes.

    change = B(x - x_prev) + F(x - x_next) + U(x - mean_t x) + T(time), the differences taken to the
    same cell one frame earlier / later and to that cell's mean over the clip, time as sines and cosines
    of the frame's relative position (an object there from the first frame, or the second frame of a
    two-frame flash, has no backward difference; the other terms still mark it).
    score = w . gelu(A(x) + change + C + A(x) * C), with C the token's attention over the question words
    (QuestionAttention).

    ``annotate`` (default) adds a learned note N(gelu(change)) to each kept token's feature (N starts at
    zero, so training starts from pure selection). Why: a kept token alone says nothing about the tokens
    dropped beside it, so a static object kept in one frame looks like an object that was there only then.
    Trained without the note, the LLM answered "which object flashed?" with a static object's colour,
    even one that was not among the options (eval/results/trained.md); with it, the scorer matches the
    uncompressed model at 10% and 5%. ``annotate=False`` is pure selection (the kept rows' features
    unchanged). Inference keeps the exact top-k (ties: lower row first);
    training keeps a Gumbel-perturbed top-k of the same size and passes gradients through a
    straight-through sigmoid gate on the kept features (``straight_through_top_k``), whose value
    is exactly 1, so train and eval feed the LLM the same features for the same selection.

    Deviations: S5 trains its mask generator with a reinforcement-style objective inside an SSM
    and EVAD ranks tokens by ViT attention; vtc trains one scorer end to end through the LLM loss
    (plus, in ``vtc train``, an optional auxiliary loss on the dataset's evidence boxes). Kept tokens
    keep their original (t, h, w) position ids. The note carries what the dropped tokens of a cell looked
    like into its kept token, as merging methods do; S5 and EVAD only select.
    """

    kind = "scorer"
    needs = frozenset({"query"})

    def __init__(self, hidden_size: int, retain: float, width: int = 64, temperature: float = 0.5,
                 annotate: bool = True) -> None:
        super().__init__(hidden_size, retain)
        self.width, self.temperature, self.annotate = int(width), float(temperature), bool(annotate)
        self.feature_norm = nn.LayerNorm(hidden_size)
        self.diff_norm = nn.LayerNorm(hidden_size)
        self.feature = init_linear(nn.Linear(hidden_size, width))
        self.motion = init_linear(nn.Linear(hidden_size, width))
        self.question = QuestionAttention(hidden_size, width)
        self.out = init_linear(nn.Linear(width, 1))
        self.ahead_norm = nn.LayerNorm(hidden_size)
        self.novelty_norm = nn.LayerNorm(hidden_size)
        self.ahead = init_linear(nn.Linear(hidden_size, width))
        self.novelty = init_linear(nn.Linear(hidden_size, width))
        self.when = init_linear(nn.Linear(2 * TIME_FREQUENCIES, width))
        if self.annotate:
            self.note = init_linear(nn.Linear(width, hidden_size), zero=True)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "temperature": self.temperature, "annotate": self.annotate}

    def scores_and_notes(self, tokens: VisualTokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[N] scores and, with ``annotate``, [N, D] notes added to the kept features."""
        x = self.check_features(tokens)
        feature = self.feature(self.feature_norm(x))
        context = self.question(feature, tokens)
        change = (
            self.motion(self.diff_norm(_difference(x, tokens, -1)))
            + self.ahead(self.ahead_norm(_difference(x, tokens, 1)))
            + self.novelty(self.novelty_norm(x - cell_means(x, tokens)))
            + self.when(_time_features(tokens).to(x.device, x.dtype))
        )
        scores = self.out(torch.nn.functional.gelu(feature + change + context + feature * context)).squeeze(-1)
        notes = self.note(torch.nn.functional.gelu(change)) if self.annotate else None
        return scores, notes

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        count = self.resolve_budget(budget).count(len(tokens))
        scores, notes = self.scores_and_notes(tokens)
        device = tokens.features.device
        if not self.training:
            keep = hard_top_k(scores.detach(), count).to(device)
            return Selection(keep=keep, features=None if notes is None else _noted(tokens, keep, notes))
        self.last_scores.append((tokens.source, scores))
        keep, gate = straight_through_top_k(scores, count, self.temperature, self.noise_generator)
        keep = keep.to(device)
        features = tokens.features[keep] if notes is None else _noted(tokens, keep, notes)
        return Selection(keep=keep, features=features * gate[:, None].to(device, features.dtype))


def _noted(tokens: VisualTokens, keep: torch.Tensor, notes: torch.Tensor) -> torch.Tensor:
    """The kept rows' features with their notes added, in the model's dtype and device."""
    return tokens.features[keep] + notes[keep.to(notes.device)].to(tokens.features.device, tokens.features.dtype)

def _difference(x: torch.Tensor, tokens: VisualTokens, step: int) -> torch.Tensor:
    """x minus the same cell ``step`` frames away; zero where there is no such token."""
    other = same_cell_rows(tokens, step).to(x.device)
    return torch.where(other[:, None] >= 0, x - x[other.clamp(min=0)], torch.zeros_like(x))


def _time_features(tokens: VisualTokens) -> torch.Tensor:
    """[N, 2F] sin and cos of k * pi * relative time, k = 1..F."""
    angle = relative_time(tokens)[:, None] * torch.arange(1, TIME_FREQUENCIES + 1, device=tokens.frame.device) * torch.pi
    return torch.cat([angle.sin(), angle.cos()], dim=-1)
