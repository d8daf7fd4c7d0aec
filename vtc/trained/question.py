"""Question conditioning shared by the trained compressors: each visual token attends over the question."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..tokens import VisualTokens
from .base import init_linear


class QuestionAttention(nn.Module):
    """Context [N, H] for N visual queries [N, H] from the question's input embeddings [L, D].

    The question rows come from the prompt (``tokens.question``, set by the engine for methods
    that need "query"): one softmax attention head, so a token can pick the question word that
    concerns it ("square", "red") rather than the mean of every word.
    """

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.key = init_linear(nn.Linear(hidden_size, width))
        self.value = init_linear(nn.Linear(hidden_size, width))
        self.width = width

    def forward(self, queries: torch.Tensor, tokens: VisualTokens) -> torch.Tensor:
        question = tokens.question
        if question is None:
            raise ValueError("a trained compressor needs the question rows; run it through vtc.wrap (needs='query')")
        text = self.norm(question.to(queries.device, queries.dtype))
        weights = torch.softmax(queries @ self.key(text).T / math.sqrt(self.width), dim=-1)
        return weights @ self.value(text)
