"""FrameFusion: merge visual tokens into the same patch of the previous frame in shallow layers, then prune by attention.

Paper: Fu et al., "FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Vision
Language Models" (ICCV 2025). Official code: thu-nics/FrameFusion (``framefusion/main.py``: ``FrameFusion.forward``,
``compute_similarity_and_token_index_by_patch``, ``merge_tokens_and_get_mask``, ``_compute_pruning_ratio``; where it
runs: ``framefusion/models/qwen2/modeling_qwen2.py``, ``.../qwen2/modeling_qwen2_vl.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens

DEFAULT_COST = 0.3  # apply_framefusion(cost=0.3) in every official example
DEFAULT_THRESHOLD = 0.6  # similarity_lower_bound
DEFAULT_MIN_SHARE = 0.1  # ratio_lower_bound
DEFAULT_QUERIES = 1  # scaled_dot_product_attention(num=1): LLaVA-Video / Qwen2 and InternVL adapters (Qwen2-VL: 4)
UNRELATED = -2.0  # similarity of a token with no earlier token at its patch (the official IGNORE_TOKEN)


@register("framefusion")
@dataclass
class FrameFusion(Method):
    """Shallow layers: merge tokens into the same patch of the previous frame (cos >= 0.6); then prune to a FLOP budget.

    Merging (official ``FrameFusion.forward``): one merge event per layer from layer 0. Each visual token is
    compared (cosine) with the previous remaining token at its (h, w) patch, in sequence order; every token with
    similarity >= ``threshold`` is merged away, and each run of consecutive merged tokens of a patch is averaged,
    with equal weights, into the token just before the run (its anchor, which keeps its position ids). Tokens
    merged at one layer are gone at the next, so later events compare with the anchors (cascaded merging). The
    share merged at the event is recorded; when it is below ``min_share`` merging stops after this event, and the
    next layer prunes. When the share merged would meet the budget by itself, only the most similar
    ``int(upper * n)`` are merged and nothing more happens (``upper`` below).

    Pruning: the tokens are ranked by the head-averaged attention of the last ``queries`` prompt rows (the
    official adapters use 1 on LLaVA-Video and InternVL, 4 on Qwen2-VL; 0 = every row, the mean attention each
    token receives, which the paper calls cumulative attention) in the first layer after the last merge, on the
    merged tokens; ``round(n * (1 - p))`` are kept (at least one).

    Budget: ``retain`` is the paper's ``cost``, the FLOP-equivalent retention (mean over the L layers of the
    share of the visual tokens that entered each layer processes); ``stats.flop_retention`` reports the one
    reached. Following ``_compute_pruning_ratio``: after merge events with shares r_0..r_e, s = prod(1 - r_i)
    and the layers so far spent sum_i s_i; the remaining L - e - 1 layers may process
    (L * retain - sum_i s_i) / (L - e - 1) of them, so the next event may remove ``upper = 1 - that / s``
    (0 when nothing needs removing). Without a budget, ``cost`` (default 0.3, the official examples'). A
    ``tokens`` budget is refused (a count does not say at which layers).

    Deviations: vtc acts between layers, the official code inside them. Event 0 merges the LLM input (as the
    official, before layer 0's attention; it runs as a prefill-stage part, so ``stats.kept_indices`` and
    ``stats.merged_into`` show it and ``stats.retention`` counts the tokens left after it); event e >= 1 merges
    layer e's input (officially layer e-1 after its attention, before its MLP), and pruning happens before the
    layer after the one whose attention ranks (officially after that layer's attention, before its MLP): each
    layer then processes exactly the share the FLOP model counts for it. The FLOP model uses the model's depth
    (the official hard-codes 28 layers). The official README asks for a per-model ``threshold`` (the paper's
    S_th); 0.6 is its default. Similarities are computed in float32 (the official: model dtype); ties keep the
    lower index; padding rows
    are masked out of the ranking attention; a batch merges and prunes each sample on its own (the official
    runs batch size 1). A budget that merging at the shallow layers has already overspent (possible on shallow
    models, where the official raises "The cost is too small") prunes to one token and says so in the notes.
    """

    threshold: float = DEFAULT_THRESHOLD
    min_share: float = DEFAULT_MIN_SHARE
    queries: int = DEFAULT_QUERIES
    cost: float | None = None
    stage = "layer"
    needs = frozenset({"attn"})
    budget_knob = ("cost", "cost= (the paper's FLOP budget)")
    whole_video_only = "budgets FLOPs over all visual tokens of a prompt"

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold (cosine similarity lower bound) must be in [-1, 1], got {self.threshold}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share (the share merged below which merging stops) must be in [0, 1], got {self.min_share}")
        if self.queries < 0:
            raise ValueError(f"queries (last prompt rows whose attention ranks; 0 = all) must be >= 0, got {self.queries}")
        if self.cost is not None and not 0.0 < self.cost <= 1.0:
            raise ValueError(f"cost (FLOP-equivalent retention) must be in (0, 1], got {self.cost}")

    def resolve_budget(self, budget: Budget) -> Budget:
        if budget.tokens is not None:
            raise ValueError("framefusion's budget is a FLOP-equivalent retention: pass retain=, not tokens=")
        return super().resolve_budget(budget)

    def parts(self, num_layers: int, budget: Budget) -> list[tuple[Method, Budget | None]]:
        cost = budget.retain if budget.retain is not None else (DEFAULT_COST if self.cost is None else self.cost)
        knobs = dict(num_layers=num_layers, cost=cost, threshold=self.threshold, min_share=self.min_share,
                     queries=self.queries)
        return [(FrameFusionInput(layer=0, **knobs), Budget())] + [
            (FrameFusionLayer(layer=layer, **knobs), Budget()) for layer in range(1, num_layers)
        ]


@dataclass(frozen=True)
class Progress:
    """One sample's FrameFusion so far: the share merged at each event (one per layer) and what comes next."""

    shares: tuple[float, ...] = ()
    phase: str = "merge"  # "merge", "prune" (at the next layer) or "done"


@dataclass
class FrameFusionLayer(Method):
    """FrameFusion at one layer: a merge event, the pruning, or nothing, as the sample's ``Progress`` says."""

    layer: int = 0
    num_layers: int = 1
    cost: float = DEFAULT_COST
    threshold: float = DEFAULT_THRESHOLD
    min_share: float = DEFAULT_MIN_SHARE
    queries: int = DEFAULT_QUERIES
    name = "framefusion"
    stage = "layer"
    needs = frozenset({"attn"})

    def attention_rows(self, tokens: list[VisualTokens]) -> int | None:
        """The ranking attention is computed only when a sample prunes at this layer."""
        return self.queries if any(_progress(t).phase == "prune" for t in tokens) else None

    def resolve_budget(self, budget: Budget) -> Budget:
        return budget  # the cost was fixed when the parts were made

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        progress = _progress(tokens)
        if progress.phase == "prune":
            return self._prune(tokens, progress)
        if progress.phase == "merge":
            return self._merge(tokens, progress)
        return Selection(keep=torch.arange(len(tokens), device=tokens.features.device), carry=progress)

    def _merge(self, tokens: VisualTokens, progress: Progress) -> Selection:
        upper, overspent = removable_share(progress.shares, self.cost, self.num_layers)
        order, similarity = patch_similarity(tokens)
        merge = similarity >= self.threshold
        share = int(merge.sum()) / len(tokens)
        if overspent or share < upper:
            # merge every similar token; below min_share (or past the budget) this is the last event
            stop = overspent or share < self.min_share
            carry = Progress((*progress.shares, share), "prune" if stop else "merge")
        else:  # merging alone meets the budget: only the most similar, then nothing more
            merge = torch.zeros_like(merge)
            merge[top_k_stable(similarity, int(upper * len(tokens)))] = True
            carry = Progress(progress.shares, "done")
        if not bool(merge.any()):
            return Selection(keep=torch.arange(len(tokens), device=merge.device), carry=carry)
        keep, features, merged_into = merge_runs(tokens.features, order, merge)
        return Selection(keep=keep, features=features.to(tokens.features.dtype), merged_into=merged_into, carry=carry)

    def _prune(self, tokens: VisualTokens, progress: Progress) -> Selection:
        if tokens.attn is None:
            raise ValueError("framefusion needs the attention of the layer before to prune; it only runs at the layer stage")
        ratio, overspent = removable_share(progress.shares, self.cost, self.num_layers)
        count = max(1, round(len(tokens) * (1 - ratio)))
        keep = torch.sort(top_k_stable(tokens.attn, count)).values
        notes = [_overspent_note(self.layer)] if overspent else []
        return Selection(keep=keep, notes=notes, carry=Progress(progress.shares, "done"))


@dataclass
class FrameFusionInput(FrameFusionLayer):
    """FrameFusion's first merge event, on the language model's input (before layer 0, as the official code):
    a prefill-stage part, so every layer's KV cache and every decode mask start from the merged prompt."""

    stage = "prefill"


def _progress(tokens: VisualTokens) -> Progress:
    return tokens.carry if isinstance(tokens.carry, Progress) else Progress()


def _overspent_note(layer: int) -> str:
    return (f"framefusion: merging in the layers before {layer} already processed more than the FLOP budget allows; "
            "pruned to one token (the official code raises 'The cost is too small')")


def removable_share(shares: tuple[float, ...], cost: float, num_layers: int) -> tuple[float, bool]:
    """The share of the current tokens the next event may remove so the remaining layers meet ``cost`` (the
    official ``_compute_pruning_ratio``), and whether the layers so far already spent more than ``cost`` allows
    (then 1.0: remove all)."""
    kept, spent = 1.0, 0.0
    for share in shares:
        kept *= 1.0 - share
        spent += kept
    remaining = num_layers * cost - spent
    if remaining < 0:
        return 1.0, True
    allowed = remaining / ((num_layers - len(shares)) * kept) if kept > 0 else float("inf")
    return (0.0 if allowed > 1 else 1.0 - allowed), False


def patch_similarity(tokens: VisualTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ordered by (h, w) patch, then by row, and each one's cosine similarity with the token before it in
    that order when both are at the same patch (else ``UNRELATED``): ([N] order, [N] similarity in that order)."""
    width = tokens.grid[2]
    patch = tokens.coords[:, 1] * width + tokens.coords[:, 2]
    by_row = torch.argsort(tokens.index, stable=True)
    order = by_row[torch.argsort(patch[by_row], stable=True)]
    x = F.normalize(tokens.features[order].float(), dim=-1)
    similarity = torch.full((len(tokens),), UNRELATED, device=x.device)
    same = patch[order][1:] == patch[order][:-1]
    similarity[1:] = torch.where(same, (x[1:] * x[:-1]).sum(dim=-1), torch.tensor(UNRELATED, device=x.device))
    return order, similarity


def merge_runs(features: torch.Tensor, order: torch.Tensor, merge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average every run of merged tokens (consecutive in ``order``) with the token before it, equal weights.

    ``merge`` is in ``order``'s positions; the token before a run is never merged (a patch's first token never is).
    Returns the kept rows (sorted), their features and, per row, its representative's position among the kept."""
    positions = torch.arange(order.numel(), device=order.device)
    anchor = torch.cummax(torch.where(merge, torch.zeros_like(positions), positions), dim=0).values
    representative = torch.empty_like(order)
    representative[order] = order[anchor]  # per row: the row its features go to
    keep = torch.sort(order[~merge]).values
    x = features.float()
    sums = torch.zeros_like(x).index_add_(0, representative, x)
    counts = torch.bincount(representative, minlength=x.shape[0]).to(x.dtype)
    slot = torch.full_like(order, -1)
    slot[keep] = torch.arange(keep.numel(), device=order.device)
    return keep, sums[keep] / counts[keep, None], slot[representative]
