"""DyMU's dynamic token merging (DToMe): ToMe bipartite merging in every vision block, only above a per-layer
similarity threshold estimated from unlabeled data, so the token count follows the content.

Paper: Wang et al., "DyMU: Dynamic Merging and Virtual Unmerging for Efficient VLMs" (2025).
Official code: MikeWangWZHL/dymu (``src/open_clip/tome.py``: ``bipartite_soft_matching``,
``batch_level_bipartite_soft_matching``, ``ToMEAttention``, ``ToMEBlock.merge_tokens``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..budget import Budget
from ..method import Method
from ..registry import register
from ..tokens import Selection, VisualTokens

THRESHOLDS_FILE = "vtc_dymu_thresholds.json"


@register("dymu")
@dataclass
class DyMU(Method):
    """Inside the vision tower, merge similar tokens in every block (DyMU's DToMe): the count follows the content.

    In each vision block, after attention and before the MLP (as the official ``ToMEBlock``), each frame's
    tokens are split alternately into sets A and B (raster order), every A token finds its most
    cosine-similar B token by the block's keys (averaged over heads), and A tokens whose best similarity
    exceeds that block's threshold merge into it: a size-weighted average, sizes add up, and later blocks
    use proportional attention (log size added to every key's logit). Thresholds come from unlabeled
    videos (``vtc dymu-thresholds MODEL VIDEO...``: per block, the similarity of the r-th best pair over
    a batch at a fixed r per block, averaged over batches, as the official threshold finder) and are
    stored beside the model (``vtc_dymu_thresholds.json``, or pass ``thresholds=PATH``).

    With a vtc budget instead (``dymu:0.25``), each frame group merges a fixed count, spread evenly over the
    blocks (the official "constant" schedule; what a block cannot merge, at most half its tokens, moves
    to the next), so the count no longer follows the content; ``r=`` fixes merges per frame per block.

    On the Qwen ViTs a token is a merge unit (the 2x2 patches one language-model row is made of, merged
    patch by patch, keys averaged over the unit), merging stays inside a frame group, and a surviving token
    keeps its own LLM position (its representative's). Virtual unmerging in the LLM (VTU) is not done:
    the language model sees the merged tokens at their representatives' positions.
    """

    thresholds: str | None = None
    r: int | None = None
    proportional: bool = True
    stage = "vision"
    budget_knob = ("r", "r= (merges per frame per block)")
    every_block = True  # acts in each block of the tower, not at one layer

    def __post_init__(self) -> None:
        if self.r is not None and self.r < 1:
            raise ValueError(f"r (merges per frame per block) must be >= 1, got {self.r}")
        if self.r is not None and self.thresholds is not None:
            raise ValueError("dymu takes either thresholds= (the paper's dynamic merging) or r= (a fixed count), not both")

    def resolve_budget(self, budget: Budget) -> Budget:
        if budget.is_set and self.thresholds is not None:
            raise ValueError("dymu takes either thresholds= or a budget (retain/tokens), not both")
        if budget.is_set and budget.tokens is not None and budget.scope != "frame":
            raise ValueError("dymu merges inside each frame group: give retain= or a per-frame token count")
        return super().resolve_budget(budget)

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        raise ValueError("dymu acts inside every vision block; it runs only through vtc.wrap on a tower that allows it")

    def merges_per_block(self, units: int, blocks: int, budget: Budget) -> list[int] | None:
        """Merges per frame group in each block for a fixed count (r= or a budget); None: thresholds decide."""
        if self.r is not None:
            return [self.r] * blocks
        if not budget.is_set:
            return None
        total = units - budget.count(units)
        base, extra = divmod(total, blocks)
        return [base + (1 if i < extra else 0) for i in range(blocks)]

    def load_thresholds(self, model_dir: str | None, blocks: int) -> list[float]:
        """Per-block thresholds from ``thresholds=`` or the file beside the model."""
        path = Path(self.thresholds) if self.thresholds else (Path(model_dir) / THRESHOLDS_FILE if model_dir else None)
        if path is None or not path.is_file():
            where = str(path) if path else "beside the model (it was not loaded from a local directory)"
            raise ValueError(
                f"dymu needs per-block thresholds estimated for this model: none at {where}. Run "
                "`vtc dymu-thresholds MODEL_DIR VIDEO...` (unlabeled videos), pass thresholds=PATH, or give a "
                "budget (dymu:0.25) for a fixed count"
            )
        values = json.loads(path.read_text())["thresholds"]
        if len(values) != blocks:
            raise ValueError(f"{path} holds {len(values)} thresholds but this tower has {blocks} blocks")
        return [float(v) for v in values]


def bipartite_pairs(
    keys: torch.Tensor, limit: int | None, threshold: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame's ToMe matching over its M tokens (in raster order): A = even, B = odd positions.

    Returns the merged A rows, the B row each merges into, and every A row's best similarity (for the
    threshold finder). ``limit`` caps the merges (a fixed count); ``threshold`` keeps only pairs above
    it; at most half the tokens merge, as ToMe. Pairs are taken in decreasing similarity (stable ties).
    """
    metric = keys.float() / keys.float().norm(dim=-1, keepdim=True)
    a, b = metric[0::2], metric[1::2]
    empty = torch.zeros(0, dtype=torch.long, device=keys.device)
    if not b.shape[0]:
        return empty, empty, torch.zeros(0, device=keys.device)
    best, partner = (a @ b.T).max(dim=1)
    order = torch.sort(best, descending=True, stable=True).indices
    count = min(a.shape[0], keys.shape[0] // 2)
    if threshold is not None:
        count = min(count, int((best > threshold).sum()))
    if limit is not None:
        count = min(count, limit)
    chosen = order[:count]
    return chosen * 2, partner[chosen] * 2 + 1, best
