"""HoliTom's inner-LLM stage: at layer K keep the most attended visual tokens and fold the rest into them.

Official code: cokeshao/HoliTom, ``holitom/modeling_qwen2.py`` (``Qwen2Model.forward``, HOLITOM_k /
HOLITOM_r). Runs as the layer part of ``holitom(inner_layer=K)``; not registered on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method, top_k_stable
from ..tokens import Selection, VisualTokens

DEFAULT_INNER_RATIO = 0.5  # HOLITOM_r


@dataclass
class HoliTomInner(Method):
    """Before layer ``layer`` keep ``round(N * (1 - ratio))`` visual tokens by the last prompt token's
    head-averaged attention at layer K-1 (as FastV); every other token is averaged into the kept token
    whose layer-K input is most cosine-similar, one at a time in increasing position, each step
    ``kept = (kept + dropped) / 2`` (the official loop; so a kept token that absorbs m tokens ends as
    ``kept / 2**m + sum_i dropped_i / 2**(m - i + 1)``, later tokens weighing more). Similarities use the
    features before any averaging. Kept tokens keep their original position ids (as the official code).

    Deviations: the loop is evaluated in closed form in float32 (the official code runs it in the model
    dtype); ties at the k-th score keep the lower index; at least one token is kept; a batch merges each
    sample on its own tokens (the official code reads sample 0's layout).
    """

    layer: int = 1
    ratio: float = DEFAULT_INNER_RATIO
    name = "holitom"
    stage = "layer"
    needs = frozenset({"attn"})

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise ValueError(f"inner_layer must be an int >= 1 (the attention of layer K-1 is needed), got {self.layer!r}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"inner_ratio (the share merged away) must be in [0, 1), got {self.ratio}")

    def resolve_budget(self, budget: Budget) -> Budget:
        return budget  # HOLITOM_r fixes the count; the outer stage takes the pipeline's budget

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if tokens.attn is None:
            raise ValueError("holitom's inner stage needs the last token's attention; it only runs at the layer stage")
        count = max(1, round(len(tokens) * (1 - self.ratio)))
        keep = torch.sort(top_k_stable(tokens.attn, count)).values
        features, target = fold_into_most_similar(tokens.features, keep)
        return Selection(keep=keep, features=features.to(tokens.features.dtype), merged_into=target)


def fold_into_most_similar(features: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept rows' features after averaging every other row into its most cosine-similar kept row, in
    increasing row order, halving each time; and per input row its position in ``keep``."""
    x = features.to(torch.promote_types(features.dtype, torch.float32))
    dropped = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    dropped[keep] = False
    others = dropped.nonzero().flatten()  # ascending: the official loop order
    target = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    target[keep] = torch.arange(keep.numel(), device=x.device)
    if others.numel() == 0:
        return x[keep], target
    similarity = F.normalize(x[others], dim=-1) @ F.normalize(x[keep], dim=-1).T
    nearest = similarity.argmax(dim=-1)  # ties: the first kept row, as torch.max
    target[others] = nearest
    absorbed = torch.bincount(nearest, minlength=keep.numel())
    # rank of each folded row among those going to the same kept row (0 = first folded)
    order = torch.argsort(nearest, stable=True)
    starts = torch.cumsum(absorbed, dim=0) - absorbed
    rank = torch.empty_like(nearest)
    rank[order] = torch.arange(nearest.numel(), device=x.device) - starts[nearest[order]]
    weights = torch.pow(2.0, -(absorbed[nearest] - rank).double()).to(x.dtype)
    merged = x[keep] * torch.pow(2.0, -absorbed.double()).to(x.dtype)[:, None]
    merged.index_add_(0, nearest, x[others] * weights[:, None])
    return merged, target
