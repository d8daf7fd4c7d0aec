"""PyramidDrop: drop visual tokens in stages inside the LLM, ranked by the last instruction token's attention.

Paper: Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction" (CVPR 2025). Official code: Cooperx521/PyramidDrop
(``llava/model/modeling_llama_pdrop.py``: ``pdrop_forward``, ``pdrop_rank_drop``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..budget import Budget
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens

DEFAULT_RATIO = 0.5  # the paper's lambda: image_token_ratio_list [1.0, 0.5, 0.25, 0.125]
DEFAULT_STAGES = 4  # layer_list [8, 16, 24] of LLaVA-1.5's 32 layers


@register("pyramiddrop")
@dataclass
class PyramidDrop(Method):
    """Stage s of the LLM keeps ratio**s of the visual tokens, ranked by last-token attention at its first layer.

    The language model is split into ``stages`` equal stages; at the start of stage s (s = 1..S-1,
    layer round(s * L / S)) it keeps ``int(N * ratio**s)`` of the N visual tokens that entered the
    LLM, ranked by the attention of the last prompt token at that layer.

    As the official code: the ranking layer's own query and keys are computed on its (normalised)
    input before it runs, attention is softmaxed over the whole sequence and averaged over heads, and
    each stage's count is a share of N (not of the previous stage). Kept tokens keep their original
    position ids (the official LLaVA code shifts them down in decoding instead). The defaults are the
    paper's: 4 stages (LLaVA-1.5: layers 8/16/24 of 32) and ``ratio`` (lambda) 0.5.

    Budget: ``retain`` is the FLOP-equivalent retention, the mean over layers of the share of visual
    tokens each layer processes, sum_s (stage s's layers / L) * lambda**s; vtc solves it for lambda
    (the stage layers stay fixed). Every layer before the first cut sees all tokens, so retain must be
    at least (first cut layer) / L (0.25 with 4 stages); more stages reach lower. ``int()`` flooring
    makes the reached retention at most the asked one (``stats.flop_retention`` reports it). A ``tokens``
    budget is refused (a count does not say at which layers), and a cut keeps at least one token.
    Deviations: ties at the k-th score keep the lower index (the official torch.topk order is
    unspecified); a padded batch ranks each sample on its own row, not on sample 0's layout.
    """

    stages: int = DEFAULT_STAGES
    ratio: float | None = None
    stage = "layer"
    budget_knob = ("ratio", "ratio= (the paper's lambda)")
    whole_video_only = "ranks all visual tokens of a prompt at once"
    needs = frozenset({"attn"})

    def __post_init__(self) -> None:
        if self.stages < 2:
            raise ValueError(f"stages must be an int >= 2 (one cut needs two stages), got {self.stages!r}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio (lambda, the share kept per stage) must be in (0, 1], got {self.ratio}")

    def resolve_budget(self, budget: Budget) -> Budget:
        if budget.tokens is not None:
            raise ValueError("pyramiddrop's budget is a FLOP-equivalent retention: pass retain=, not tokens=")
        return super().resolve_budget(budget)

    def cut_layers(self, num_layers: int) -> list[int]:
        cuts = [round(s * num_layers / self.stages) for s in range(1, self.stages)]
        if cuts[0] < 1 or len(set(cuts)) != len(cuts) or cuts[-1] >= num_layers:
            raise ValueError(f"pyramiddrop cannot fit {self.stages} stages into {num_layers} layers; use fewer stages")
        return cuts

    def min_retain(self, num_layers: int) -> float:
        return self.cut_layers(num_layers)[0] / num_layers

    def parts(self, num_layers: int, budget: Budget) -> list[tuple[Method, Budget | None]]:
        cuts = self.cut_layers(num_layers)
        if budget.retain is not None:
            ratio = solve_ratio(cuts, num_layers, budget.retain)
        else:
            ratio = DEFAULT_RATIO if self.ratio is None else self.ratio
        return [(PyramidDropCut(layer=layer, keep=ratio**s), Budget()) for s, layer in enumerate(cuts, start=1)]


def flop_retention(cuts: list[int], num_layers: int, ratio: float) -> float:
    """Mean over layers of the share of visual tokens processed when stage s keeps ``ratio**s`` of them."""
    bounds = [0, *cuts, num_layers]
    return sum((bounds[s + 1] - bounds[s]) * ratio**s for s in range(len(bounds) - 1)) / num_layers


def solve_ratio(cuts: list[int], num_layers: int, retain: float) -> float:
    """The lambda whose FLOP-equivalent retention is ``retain`` (bisection: it grows with lambda)."""
    low, high = 0.0, 1.0
    if retain >= 1.0:
        return 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if flop_retention(cuts, num_layers, middle) < retain:
            low = middle
        else:
            high = middle
    return low


@dataclass
class PyramidDropCut(Method):
    """One PyramidDrop cut: before ``layer``, keep the ``keep`` share of the visual tokens that entered the
    LLM with the highest attention from the last prompt token at this layer."""

    layer: int = 1
    keep: float = 1.0
    name = "pyramiddrop"
    stage = "layer"
    attention_from = "own"
    needs = frozenset({"attn"})

    def resolve_budget(self, budget: Budget) -> Budget:
        return budget  # the count comes from entry_budget

    def entry_budget(self, entered: int) -> Budget:
        return Budget(tokens=max(1, int(entered * self.keep)))

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if tokens.attn is None:
            raise ValueError("pyramiddrop needs the last token's attention; it only runs at the layer stage")
        keep = top_k_stable(tokens.attn, budget.count(len(tokens)))
        return Selection(keep=torch.sort(keep).values)
