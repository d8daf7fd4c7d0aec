"""VQ codebook compressor: tokens are hashed to learned codes and each kept code becomes one token.

After VQToken (Zhang et al., "Token Dynamics"/"VQToken: neural discrete token representation
learning for extreme token reduction in video LLMs", 2025): an adaptive vector-quantised codebook
summarises the video's tokens, and a token hash records which code each token went to and where it
was, so the compact sequence keeps spatio-temporal positions.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..budget import Budget
from ..tokens import Selection, VisualTokens
from .base import TrainedCompressor, init_linear


class VQCodebook(TrainedCompressor):
    """Quantise tokens to a learned codebook, keep the ``count`` most used codes, one token each.

    1. Hash: every token goes to its nearest code by cosine similarity of a learned projection.
    2. Adapt: the ``count`` codes with the most tokens are kept (ties: lower code first); a token
       of a dropped code moves to its nearest kept code. If fewer codes are in use than the budget,
       the worst-quantised tokens (lowest similarity to their code) become codes of their own, so
       the budget is met exactly.
    3. Each kept code emits the mean of its tokens' features plus a learned code embedding
       (a residual that starts at zero), at the row of its best-matching token: that token's
       (t, h, w) position ids carry the hash's position for the whole group.

    Training: the mean uses straight-through assignment weights (hard one-hot in the forward,
    softmax over kept codes in the backward), so the LLM loss moves the codebook and projection.

    Deviations: VQToken builds its codebook by adaptive clustering per video and adds a
    hash-conditioned attention module that writes positions into the code tokens; vtc learns one
    global codebook, adapts it per video by usage, and expresses the hash through the kept rows'
    own position ids (no new module inside the LLM).
    """

    kind = "vq"
    needs = frozenset()

    def __init__(self, hidden_size: int, retain: float, width: int = 64, codes: int = 64, temperature: float = 0.1) -> None:
        super().__init__(hidden_size, retain)
        self.width, self.codes, self.temperature = int(width), int(codes), float(temperature)
        self.norm = nn.LayerNorm(hidden_size)
        self.project = init_linear(nn.Linear(hidden_size, width))
        self.codebook = nn.Parameter(torch.randn(codes, width))
        self.code_embedding = init_linear(nn.Linear(width, hidden_size), zero=True)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "codes": self.codes, "temperature": self.temperature}

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        count = self.resolve_budget(budget).count(len(tokens))
        x = self.check_features(tokens)
        similarity = F.normalize(self.project(self.norm(x)), dim=-1) @ F.normalize(self.codebook, dim=-1).T
        code = similarity.detach().argmax(dim=-1)
        usage = torch.bincount(code, minlength=self.codes)
        order = torch.sort(usage, descending=True, stable=True).indices
        kept_codes = order[: min(count, int((usage > 0).sum()))]
        local = similarity[:, kept_codes]  # [N, C'] similarity to each kept code
        group = local.detach().argmax(dim=-1)  # token -> kept code (the hash)
        best = local.detach().gather(1, group[:, None]).squeeze(1)
        extra = count - kept_codes.numel()
        members = F.one_hot(group, kept_codes.numel()).bool()
        representatives = torch.where(members, best[:, None], torch.full_like(members, -2.0, dtype=best.dtype)).argmax(dim=0)
        candidates = best.clone()
        candidates[representatives] = float("inf")  # a kept code never loses its last token
        singles = torch.sort(candidates, stable=True).indices[:extra] if extra > 0 else group.new_zeros(0)
        group[singles] = kept_codes.numel() + torch.arange(singles.numel(), device=x.device)
        groups = kept_codes.numel() + singles.numel()
        hard = F.one_hot(group, groups).to(x.dtype)  # [N, G]
        weights = hard
        if self.training:
            soft = torch.softmax(local / self.temperature, dim=-1)
            soft = F.pad(soft, (0, singles.numel()))
            weights = hard + soft - soft.detach()
        sizes = hard.sum(dim=0)
        means = (weights.T @ x) / sizes[:, None]
        code_vectors = torch.cat([self.codebook[kept_codes], self.codebook.new_zeros(singles.numel(), self.width)])
        features = means + self.code_embedding(code_vectors)
        fit = torch.where(hard.bool(), best[:, None].expand_as(hard), torch.full_like(hard, -2.0))
        rows = fit.argmax(dim=0)  # per group, its best-matching token (first on ties)
        order_rows = torch.argsort(rows)
        device = tokens.features.device
        return Selection(
            keep=rows[order_rows].to(device), features=features[order_rows].to(device, tokens.features.dtype)
        )
