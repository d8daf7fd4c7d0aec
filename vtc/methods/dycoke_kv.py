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

    How (vtc/engine/cache.py): each layer from L keeps a compact copy of its KV cache (text, chosen visual
    entries, decoded tokens; keys are cached after RoPE, so gathered keys keep their positions) that is
    re-gathered from the whole prompt only at steps where a row chose anew and appended to at every step;
    attention runs over the copy, so decode attention at those layers costs the kept entries, not the prompt.
    Memory, stated honestly: those layers hold the whole prompt's keys and values (kept, as the official
    ``PrunableDynamicCache`` keeps everything, so a later step can choose other tokens) plus the copy, i.e.
    prompt + (text + kept visual) + decoded entries per layer instead of prompt + decoded: more KV memory,
    not less (at P = 0.7 about 1.3x the prompt's KV at layers L..). Batches: each row chooses for itself and
    the copies are left-padded per row; beam search moves each row's copy and choice with its beam. sdpa and
    eager run it (tested); flash attention gets the compact 2D padding mask (written, not run here: no GPU in
    the tests). Caches other than transformers' DynamicCache layers (static, sliding-window, quantized,
    offloaded) are refused, as are cropping (assisted decoding) and batch surgery (contrastive search) on a
    compacted layer. ``vtc.unwrap`` turns the latest cache's compact layers back into whole ones.

    After layer-stage cuts (``"fastv@2:0.5>dycoke-kv"``, ``pyramiddrop``, ``framefusion``, holitom's inner
    merge) the method chooses among the visual tokens that reach layer L-1 (the budget counts those), and each
    layer from L attends to the chosen tokens its own cache still holds (a cut after L may have dropped some;
    ``CacheStep.kv_lengths`` reports each layer's count).

    Deviations, all stated: the official builder never switches this stage on (a bug), and its code,
    when it runs, prunes only at steps whose attention *differs* (and uses the full cache otherwise,
    with a stale index list that drops the newest tokens), gathering the kept entries from the whole cache
    at every step; vtc follows the paper (keep the choice while attention is similar, choose anew when it
    moves) and gathers only when the choice changes. ``retain`` is 1 - P (rounded up, as every vtc
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
