"""FastV: prune visual tokens inside the LLM by the last token's attention.

Paper: Chen et al., "An Image is Worth 1/2 Tokens After Layer 2" (ECCV 2024).
Official code: pkunlp-icler/FastV (``fastv_forward``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import ScoreMethod, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens


@register("fastv")
@dataclass
class FastV(ScoreMethod):
    """At layer K keep the visual tokens the last prompt token attended to most at layer K-1.

    Score: attention of the last query, averaged over heads (as the official code). Knobs: ``layer``
    K (paper 2; demo 3) and ``ratio`` R, the fraction dropped (paper 0.5; demo 0.75), keeping
    ``round(L * (1 - R))`` (Python rounding, as official). A vtc budget replaces R: ``retain`` is
    1 - R. With neither, R = 0.5. Kept tokens keep their original position ids. Ties at the k-th
    score keep the lower index (the official result there depends on torch.topk's internal order).
    """

    layer: int = 2
    ratio: float | None = None
    stage = "layer"
    budget_knob = ("ratio", "ratio= (the paper's R)")
    needs = frozenset({"attn"})

    DEFAULT_RATIO = 0.5

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise ValueError(f"layer must be an int >= 1 (the attention of layer K-1 is needed), got {self.layer!r}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio (fraction dropped) must be in [0, 1), got {self.ratio}")


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if budget.is_set:
            return super().compress(tokens, budget)
        ratio = self.DEFAULT_RATIO if self.ratio is None else self.ratio
        k = round(len(tokens) * (1 - ratio))
        keep = top_k_stable(self.score(tokens), k)
        return Selection(keep=torch.sort(keep).values)

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        if tokens.attn is None:
            raise ValueError("fastv needs the last token's attention; it only runs at the layer stage")
        return tokens.attn
