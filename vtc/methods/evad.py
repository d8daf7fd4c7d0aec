"""EVAD keyframe-centric token dropout, as a training-free prefill method.

Paper: Chen et al., "Efficient Video Action Detection with Token Dropout and Context Refinement"
(ICCV 2023). Official code: MCG-NJU/EVAD (``KTPAttention`` / ``KTPBlock``, ``EVAD.forward``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import ScoreMethod, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens

KEYFRAME_OFFSET = 4.0  # above any motion score (1 - cosine <= 2): the keyframe ranks first


@register("evad")
@dataclass
class EVAD(ScoreMethod):
    """Keep the whole keyframe, and from the other frames the tokens that moved relative to it.

    Keyframe: the centre frame of the clip, ``frames[T // 2]`` of the frames present (the later of
    the two middle ones for even T), as the official ``key_idx = num_frames // 2``. A token of
    another frame scores its motion, 1 - cosine to the keyframe token at the same (h, w) (2, the
    maximum, when that keyframe token is absent); the keyframe outranks every other token, and the
    top of the ranking is kept.

    Defaults: the paper prunes at three ViT blocks (ViT-B: 4, 7 and 10) with keep rate 0.7 each,
    each time keeping ceil(0.7 * n) of the n tokens left, keyframe included: ``keep_rate`` and
    ``stages`` reproduce that count (about 34% of the tokens) in one step. A vtc budget
    (``retain``/``tokens``) replaces them and is met exactly; passing both is refused, and so is a
    per-frame budget (the keyframe is kept whole by design). If the budget is smaller than one
    frame, only the keyframe's most salient tokens are kept (those whose position moves most, on
    average, across the other frames; for a single frame, those least like the frame's mean token),
    and the notes say so.

    Positions: kept tokens keep their original (t, h, w) ids; nothing is merged.

    Deviations from the official code: EVAD ranks non-keyframe tokens inside a fine-tuned ViT by
    the attention they receive (averaged over all queries and heads, keyframe queries optionally
    up-weighted) and drops them progressively; vtc has no access to a retrained encoder, so it scores
    motion against the keyframe on the LLM-input features, in one step. EVAD's context-refinement
    decoder is detection-specific and not part of this method. Where the official code would fail
    (budget below one frame: negative top-k), vtc cuts into the keyframe as above.

    Complexity: O(N*D) for N tokens of dimension D, plus a sort.
    """

    keep_rate: float | None = None
    stages: int = 3
    stage = "prefill"
    budget_knob = ("keep_rate", "keep_rate= (the paper's rule)")
    whole_video_only = "keeps the keyframe whole and prunes the other frames unevenly"

    DEFAULT_KEEP_RATE = 0.7

    def __post_init__(self) -> None:
        if self.keep_rate is not None and not 0.0 < self.keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {self.keep_rate}")
        if self.stages < 1:
            raise ValueError(f"stages must be an int >= 1, got {self.stages!r}")


    def default_count(self, available: int) -> int:
        """Tokens left after ``stages`` rounds of keeping ceil(keep_rate * n), as the official KTP blocks."""
        rate = self.DEFAULT_KEEP_RATE if self.keep_rate is None else self.keep_rate
        count = available
        for _ in range(self.stages):
            count = math.ceil(rate * count)
        return count

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        budget = self.resolve_budget(budget)
        count = budget.count(len(tokens)) if budget.is_set else self.default_count(len(tokens))
        scores = self.score(tokens)
        keep = torch.sort(top_k_stable(scores, count)).values
        keyframe_size = int((scores >= KEYFRAME_OFFSET).sum())
        notes = []
        if count < keyframe_size:
            notes.append(f"budget {count} < keyframe ({keyframe_size} tokens): kept only the keyframe's most salient tokens")
        return Selection(keep=keep, notes=notes)

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        frames = torch.unique(tokens.frame)
        is_key = tokens.frame == frames[frames.numel() // 2]
        h, w = tokens.coords[:, 1], tokens.coords[:, 2]
        width = int(w.max()) + 1
        cell = h * width + w
        device = tokens.features.device
        key_row = torch.full(((int(h.max()) + 1) * width,), -1, dtype=torch.long, device=device)
        key_row[cell[is_key]] = is_key.nonzero().flatten()
        partner = key_row[cell]
        x = tokens.features.float()
        cosine = F.cosine_similarity(x, x[partner.clamp(min=0)], dim=-1)
        motion = torch.where(partner >= 0, 1.0 - cosine, torch.full_like(cosine, 2.0))

        # Keyframe saliency, used only when the budget cuts into the keyframe.
        moving = ~is_key & (partner >= 0)
        total = torch.zeros(len(tokens), dtype=torch.float32, device=device).index_add_(0, partner[moving], motion[moving])
        seen = torch.bincount(partner[moving], minlength=len(tokens))
        key_feats = x[is_key]
        distinct = torch.zeros_like(motion)
        distinct[is_key] = 1.0 - F.cosine_similarity(key_feats, key_feats.mean(dim=0, keepdim=True), dim=-1)
        saliency = torch.where(seen > 0, total / seen.clamp(min=1), distinct)
        return torch.where(is_key, KEYFRAME_OFFSET + saliency, motion)
