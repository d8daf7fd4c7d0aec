"""DyCoke's decode stage: dynamic KV-cache pruning by the new token's attention.

Paper: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models"
(CVPR 2025). Official code: KD-TAO/DyCoke, ``llava/model/language_model/modeling_qwen2.py``
(``PrunableDynamicCache.dycoke_pruning`` / ``update_cache``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import CacheChoice, Selection, VisualTokens

DEFAULT_LAYER = 3  # dycoke_l
DEFAULT_RATIO = 0.7  # the paper's P (the official builder's default is 0.8)
DEFAULT_THRESHOLD = 0.9  # re-select when successive attention vectors have cosine below this


@register("dycoke-kv")
@dataclass
class DyCokeKV(Method):
    """While decoding, layers from L on attend only to the visual tokens the new token attends to most.

    At each decode step the new token's head-averaged attention at layer L-1 over the visual tokens is
    compared with the previous step's (cosine); at the first step, or when the cosine falls below
    ``threshold``, the top ``int(N * (1 - ratio))`` visual tokens by this step's attention are chosen;
    otherwise the previous choice stands. Layers from ``layer`` on attend to the chosen visual tokens,
    to all text and to every decoded token; layers below attend to everything. The prefill is not
    changed (combine with ``dycoke`` for its TTM stage: ``"dycoke>dycoke-kv"``).

    Deviations, all stated: the official builder never switches this stage on (a bug), and its code,
    when it runs, prunes only at steps whose attention *differs* (and uses the full cache otherwise,
    with a stale index list that drops the newest tokens); vtc follows the paper (keep the choice while
    attention is similar, choose anew when it moves). Unchosen entries stay in the KV cache and are
    masked out of attention (the official cache also keeps them and gathers at every step), so memory
    does not fall and a later step can choose them again. ``retain`` is 1 - P (rounded up, as every vtc
    budget); P gives the official ``int`` count. Ties keep the lower index.
    """

    layer: int = DEFAULT_LAYER
    ratio: float | None = None
    threshold: float = DEFAULT_THRESHOLD
    stage = "cache"
    budget_knob = ("ratio", "ratio= (the paper's P)")
    whole_video_only = "ranks all visual tokens of a prompt at once"
    needs = frozenset({"attn"})

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise ValueError(f"layer must be an int >= 1 (the attention of layer L-1 is needed), got {self.layer!r}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio (P, the share of visual tokens pruned) must be in [0, 1), got {self.ratio}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine: it must be in [-1, 1], got {self.threshold}")

    def count(self, available: int, budget: Budget) -> int:
        if budget.is_set:
            return budget.count(available)
        ratio = DEFAULT_RATIO if self.ratio is None else self.ratio
        return max(1, int(available * (1 - ratio)))

    def choose(self, tokens: VisualTokens, budget: Budget, previous: CacheChoice | None) -> CacheChoice:
        """This step's choice for one row, from its attention (``tokens.attn``) and the previous step's."""
        attention = tokens.attn.float()
        if previous is not None and F.cosine_similarity(attention, previous.attention, dim=0) >= self.threshold:
            return CacheChoice(keep=previous.keep, attention=attention, reselected=False)
        keep = torch.sort(top_k_stable(attention, self.count(len(tokens), budget))).values
        return CacheChoice(keep=keep, attention=attention, reselected=True)

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        raise TypeError("dycoke-kv acts while decoding (stage 'cache'): the engine calls choose(), not compress()")
