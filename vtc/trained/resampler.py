"""Query resampler: M learned queries per temporal segment cross-attend to it and replace its tokens.

After TDC / LangDC-style temporal context compression (learned queries summarise a segment of
frames into a few context tokens, conditioned on the language query).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..budget import Budget, apportion
from ..tokens import Selection, VisualTokens
from .base import TrainedCompressor, init_linear


class QueryResampler(TrainedCompressor):
    """Split the frames into ``segments`` contiguous groups; each group's share of the budget
    (``apportion``, exact in total) is the number of learned queries that summarise it.

    Query i of a segment is ``bank[i] + Q(mean question embedding)``; it attends over the segment's
    tokens; its output is the attention-weighted mean of the token features (so an untrained
    resampler already emits tokens in the LLM's input space) plus a learned residual that starts at
    zero. Position ids: each output token takes the row of the token its query attends to most
    (queries in order, each taking the best row not yet taken), so a summary sits where its
    content came from. Nothing in the budget is left unused: segments with fewer tokens than
    queries keep their tokens as they are.

    Deviations: TDC/LangDC segment by scene change and use a Q-Former/LLM to write the context
    tokens; vtc uses fixed contiguous segments and one attention layer, trained through the LLM loss.
    """

    kind = "resampler"
    needs = frozenset({"query"})

    def __init__(self, hidden_size: int, retain: float, width: int = 64, segments: int = 4, max_queries: int = 64) -> None:
        super().__init__(hidden_size, retain)
        if segments < 1 or max_queries < 1:
            raise ValueError(f"segments and max_queries must be >= 1, got {segments}, {max_queries}")
        self.width, self.segments, self.max_queries = int(width), int(segments), int(max_queries)
        self.bank = nn.Parameter(torch.randn(max_queries, width) / math.sqrt(width))
        self.question = init_linear(nn.Linear(hidden_size, width))
        self.question_norm = nn.LayerNorm(hidden_size)
        self.token_norm = nn.LayerNorm(hidden_size)
        self.key = init_linear(nn.Linear(hidden_size, width))
        self.value = init_linear(nn.Linear(hidden_size, width))
        self.residual = init_linear(nn.Linear(width, hidden_size), zero=True)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "segments": self.segments, "max_queries": self.max_queries}

    def segment_rows(self, tokens: VisualTokens) -> list[torch.Tensor]:
        """Rows of each segment: frames present, split into at most ``segments`` contiguous groups."""
        frames = tokens.frames()
        groups = torch.tensor_split(torch.arange(len(frames)), min(self.segments, len(frames)))
        return [torch.cat([frames[i] for i in group.tolist()]) for group in groups if group.numel()]

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        count = self.resolve_budget(budget).count(len(tokens))
        x = self.check_features(tokens)
        segments = self.segment_rows(tokens)
        shares = apportion([rows.numel() for rows in segments], count)
        if max(shares) > self.max_queries:
            raise ValueError(f"{self.name} has {self.max_queries} queries per segment but the budget asks for {max(shares)}")
        question = self.question(self.question_norm(tokens.query.to(x.device, x.dtype)))
        kept, outputs = [], []
        for rows, share in zip(segments, shares):
            rows = rows.to(x.device)
            if share == rows.numel():
                kept.append(rows)
                outputs.append(x[rows])
                continue
            segment = x[rows]
            normed = self.token_norm(segment)
            queries = self.bank[:share] + question
            weights = torch.softmax(queries @ self.key(normed).T / math.sqrt(self.width), dim=-1)
            summary = weights @ segment + self.residual(weights @ self.value(normed))
            kept.append(rows[_distinct_argmax(weights.detach())])
            outputs.append(summary)
        keep, features = torch.cat(kept), torch.cat(outputs)
        order = torch.argsort(keep)
        device = tokens.features.device
        return Selection(keep=keep[order].to(device), features=features[order].to(device, tokens.features.dtype))


def _distinct_argmax(weights: torch.Tensor) -> torch.Tensor:
    """For each query (row) in order, the column with the highest weight among those not yet taken."""
    taken = torch.zeros(weights.shape[1], dtype=torch.bool, device=weights.device)
    picks = []
    for row in weights:
        choice = int(torch.argmax(row.masked_fill(taken, -1.0)))
        taken[choice] = True
        picks.append(choice)
    return torch.tensor(picks, dtype=torch.long, device=weights.device)
