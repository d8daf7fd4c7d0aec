"""TimeChat-Online Differential Token Drop (DTD).

Paper: Yao et al., "TimeChat-Online: 80% Visual Tokens are Naturally Redundant in Streaming
Videos" (2025). Official code: yaolinli/TimeChat-Online, ``Qwen2_5_VLModel.token_drop``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..cells import same_cell_rows
from ..method import ScoreMethod
from ..registry import register
from ..tokens import Selection, VisualTokens


@register("dtd")
@dataclass
class DTD(ScoreMethod):
    """Drop tokens that barely changed since the same (h, w) position in the previous frame.

    Feature mode (default): cosine similarity of each LLM-input visual token to the token at the
    same (h, w) in the previous temporal group; pixel mode: mean absolute difference of the raw
    patch pixels (first raw frame of the previous temporal pair vs the last of the current one,
    as the official code does). Frame 0 is always kept whole; every frame is compared with the
    *original* previous frame (no chaining through dropped tokens); kept tokens keep their
    original (t, h, w) M-RoPE ids; nothing is merged.

    Two ways to set how much is dropped:

    * the paper's rule (``threshold``): absolute mode drops a token when similarity > threshold
      (pixel: difference < threshold); relative mode (``absolute=False``) drops the
      ``int(N * threshold)`` most similar tokens of every frame after the first. With neither a
      threshold nor a budget, the paper's default applies: feature similarity > 0.5.
    * a vtc budget (``retain``/``tokens``): tokens are ranked by novelty (1 - similarity, or the
      pixel difference) with all of frame 0 ranked first, and the top of that ranking is kept, so
      the budget is met exactly. Deviation from the paper: when the budget is smaller than one
      frame, even frame 0 is cut (by position order), since the budget wins; every kept token then
      comes from frame 0, no change is seen at all, and a note says so.
    A token whose previous-frame counterpart was removed by an earlier method counts as novel.
    """

    threshold: float | None = None
    absolute: bool = True
    mode: str = "feature"
    stage = "prefill"
    budget_knob = ("threshold", "a threshold (the paper's rule)")

    DEFAULT_THRESHOLD = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("feature", "pixel"):
            raise ValueError(f"mode must be 'feature' or 'pixel', got {self.mode!r}")
        if not self.absolute and self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"relative mode drops a fraction per frame: threshold must be in [0, 1], got {self.threshold}")

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"pixels"}) if self.mode == "pixel" else frozenset()


    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        if budget.is_set:
            selection = super().compress(tokens, budget)
            first = int((same_cell_rows(tokens, -1) < 0).sum())  # tokens with no previous frame: ranked first
            count = selection.keep.numel()
            if budget.scope == "video" and count < first:
                selection.notes.append(
                    f"budget of {count} tokens is below the {first} tokens with no previous frame to compare with "
                    "(the first frame), which DTD keeps first: every kept token is one of them, no change is seen"
                )
            return selection
        threshold = self.DEFAULT_THRESHOLD if self.threshold is None else self.threshold
        change, has_prev = self.change(tokens)
        if self.absolute:
            drop = (change < threshold) if self.mode == "pixel" else (change > threshold)
            drop &= has_prev
        else:
            drop = torch.zeros(len(tokens), dtype=torch.bool, device=change.device)
            for rows in tokens.frames():
                rows = rows[has_prev[rows]]
                n_drop = int(rows.numel() * threshold)
                if n_drop:
                    order = torch.sort(change[rows], descending=self.mode == "feature", stable=True).indices
                    drop[rows[order[:n_drop]]] = True
        return Selection(keep=(~drop).nonzero().flatten())

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        change, has_prev = self.change(tokens)
        novelty = change if self.mode == "pixel" else 1.0 - change
        return torch.where(has_prev, novelty, torch.full_like(novelty, float("inf")))

    def change(self, tokens: VisualTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token: similarity (feature) or pixel difference to the previous frame, and whether one exists."""
        prev = same_cell_rows(tokens, -1)
        has_prev = prev >= 0
        safe_prev = prev.clamp(min=0)
        if self.mode == "pixel":
            if tokens.pixels is None:
                raise ValueError("dtd pixel mode needs raw pixels; this model input did not provide them")
            earlier = tokens.pixels[safe_prev, 0].float()
            later = tokens.pixels[:, -1].float()
            change = (earlier - later).abs().mean(dim=(-1, -2))
        else:
            change = F.cosine_similarity(tokens.features[safe_prev].float(), tokens.features.float(), dim=-1)
        return change, has_prev
