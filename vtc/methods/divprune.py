"""DivPrune: keep a maximally diverse subset of the visual tokens.

Paper: Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR 2025). Official code: vbdi/divprune, ``LlavaMetaForCausalLM.DivPrune`` in
``LLaVA/llava/model/llava_arch.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens

# Columns of the distance matrix computed at once for the nearest-neighbour pass (bounds memory at ~64 MB).
_CHUNK_ELEMENTS = 1 << 24
# Distance matrices up to this many entries (1 GiB in float32, N <= 16384) are kept for the greedy picks.
_MATRIX_ELEMENTS = 1 << 28


def divprune_select(features: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy max-min diversity selection on cosine distance; returns row indices in pick order.

    Distance is ``1 - cos``. The first pick maximises the nearest-neighbour distance (the second
    smallest entry of each distance column, as the official code takes it: the smallest is the
    token itself); every later pick maximises the distance to the closest already-picked token,
    first index on exact ties. A running min-distance vector is updated with the newest pick only
    (the official code re-takes the minimum over all picked rows, O(N K^2)). The nearest-neighbour
    pass computes the N x N distances in column chunks (O(N^2 D) time, one matrix product per
    chunk); when N^2 <= ``_MATRIX_ELEMENTS`` those columns are kept, so each pick is a row read
    (O(N)) instead of a fresh matrix-vector product over all tokens (O(N D), memory-bound: 21 s of
    picks at N=12544, D=3584 on one CPU core). Larger inputs keep O(N) memory and pay the products.
    Kept columns come from the same chunked products as the official matrix, so they can differ
    from a matrix-vector product in the last bit; picks are identical unless two candidates tie
    within float rounding (tests compare with the per-pick product on random inputs).
    """
    x = F.normalize(features.float(), dim=-1)
    n = x.shape[0]
    count = min(count, n)
    order = torch.empty(count, dtype=torch.long, device=x.device)
    if count == 0:
        return order
    if n < 2:
        order[0] = 0
        return order
    chunk = max(1, _CHUNK_ELEMENTS // n)
    keep = n * n <= _MATRIX_ELEMENTS
    nearest, rows = [], []
    for start in range(0, n, chunk):
        block = 1.0 - x @ x[start:start + chunk].T  # block[:, j]: every token's distance to token start + j
        nearest.append(torch.topk(block, 2, dim=0, largest=False).values[1])
        if keep:
            rows.append(block.T.contiguous())
    matrix = torch.cat(rows) if keep else None

    def distances(pick: torch.Tensor) -> torch.Tensor:
        return matrix[pick[0]] if matrix is not None else 1.0 - x @ x.index_select(0, pick)[0]

    pick = torch.argmax(torch.cat(nearest)).view(1)
    order[0] = pick[0]
    running = distances(pick).clone().index_fill_(0, pick, float("-inf"))
    for i in range(1, count):
        pick = torch.argmax(running).view(1)
        order[i] = pick[0]
        running = torch.minimum(running, distances(pick)).index_fill_(0, pick, float("-inf"))
    return order


@register("divprune")
@dataclass
class DivPrune(Method):
    """Keep the subset of tokens that are most different from each other (prefill stage).

    Greedy max-min diversity on cosine distance among the LLM-input visual tokens of the whole
    video (``divprune_select``). Paper default ``ratio`` (SUBSET_RATIO) 0.098, i.e. 56 of 576
    LLaVA-1.5 tokens, keeping ``int(round(ratio * N))`` (Python rounding) like the official code.
    A vtc budget replaces the ratio and is met exactly: ``budget.count(N)`` tokens, per frame
    (one independent selection per frame) when ``scope='frame'``. Nothing is merged; kept tokens
    keep their original position ids.

    Complexity: O(N^2 D) time for the first pick's nearest-neighbour distances (chunked matrix
    products), then O(N K) for the K greedy picks reading the kept N x N distances (O(N^2) memory,
    up to N=16384) or, above that, O(N K D) time in O(N) memory. The cost is quadratic in frames:
    a 1,024-frame video (200k tokens) would need 1.4e14 multiply-adds before the first pick.

    Deviations from the official code: a token already picked is never picked again (the official
    code could re-pick one when all remaining tokens duplicate picked ones, then duplicating rows);
    all-zero tokens get cosine 0 instead of NaN; a single token is kept instead of crashing in
    ``topk(2)``; when the ratio rounds to zero tokens one token is kept and noted.
    """

    ratio: float | None = None
    stage = "prefill"
    budget_knob = ("ratio", "ratio= (the paper's SUBSET_RATIO)")
    exact_budget = True  # a vtc budget is met exactly (see the docstring)

    DEFAULT_RATIO = 0.098

    def __post_init__(self) -> None:
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio (the fraction kept, SUBSET_RATIO) must be in (0, 1], got {self.ratio}")


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        notes: list[str] = []
        if budget.scope == "frame" and budget.is_set:
            groups = tokens.frames()
            counts = [budget.count(rows.numel()) for rows in groups]
        else:
            groups = [torch.arange(len(tokens), device=tokens.features.device)]
            if budget.is_set:
                counts = [budget.count(len(tokens))]
            else:
                ratio = self.DEFAULT_RATIO if self.ratio is None else self.ratio
                counts = [int(round(ratio * len(tokens)))]
                if counts[0] == 0:
                    counts = [1]
                    notes.append(f"ratio {ratio:g} of {len(tokens)} tokens rounds to 0; kept 1")
        keep = torch.cat([rows[divprune_select(tokens.features[rows], n)] for rows, n in zip(groups, counts)])
        return Selection(keep=torch.sort(keep).values, notes=notes)
