"""A decoder layer's KV cache that attends to part of its prompt: the whole prompt's keys and values stay (a
later decode step may choose other entries), and attention runs over a compact copy of the chosen prompt
entries followed by every decoded token, which each step appends to. Keys are cached after RoPE, so gathered
entries keep their positions."""
from __future__ import annotations

from typing import Callable

import torch
from transformers.cache_utils import DynamicLayer

from ..sequence import Compaction


class CompactLayer(DynamicLayer):
    """``keys``/``values`` (what attention sees, what ``get_seq_length`` counts) are the compact copy: the prompt
    columns ``compaction`` keeps, re-left-padded per row, then the decoded tokens; ``prompt_keys`` and
    ``prompt_values`` hold the whole prompt for re-gathering. ``version`` names the selection the copy was
    gathered for (the cache stage re-gathers only when its selection changes)."""

    def __init__(self, full: DynamicLayer, prompt_length: int, compaction: Compaction, version: int,
                 on_reorder: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.device, self.is_initialized = full.device, True
        self.prompt_keys, self.prompt_values = full.keys[..., :prompt_length, :], full.values[..., :prompt_length, :]
        self.keys, self.values = full.keys[..., prompt_length:, :], full.values[..., prompt_length:, :]
        self.prefix = 0  # compact prompt columns at the front of keys/values
        self.on_reorder = on_reorder
        self.regather(compaction, version)

    def regather(self, compaction: Compaction, version: int) -> None:
        """Replace the compact prompt columns by those ``compaction`` keeps; the decoded tail stays."""
        self.compaction, self.version = compaction, version
        self.keys = torch.cat([_gather(self.prompt_keys, compaction.gather), self.keys[..., self.prefix :, :]], dim=-2)
        self.values = torch.cat([_gather(self.prompt_values, compaction.gather), self.values[..., self.prefix :, :]], dim=-2)
        self.prefix = compaction.gather.shape[1]

    @property
    def decoded(self) -> int:
        return self.keys.shape[-2] - self.prefix

    def lengths(self) -> list[int]:
        """Per row, the entries attention may use: kept prompt columns (not the alignment padding) and decoded tokens."""
        return (self.compaction.valid.sum(dim=1) + self.decoded).tolist()

    def full(self) -> DynamicLayer:
        """A plain layer holding the whole sequence (prompt, then decoded tokens), as if nothing had been compacted."""
        layer = DynamicLayer()
        layer.device, layer.is_initialized = self.device, True
        layer.keys = torch.cat([self.prompt_keys, self.keys[..., self.prefix :, :]], dim=-2)
        layer.values = torch.cat([self.prompt_values, self.values[..., self.prefix :, :]], dim=-2)
        return layer

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: every row follows the beam it continues, its selection (via the cache stage) too."""
        index = beam_idx.to(self.keys.device)
        for name in ("prompt_keys", "prompt_values", "keys", "values"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.on_reorder(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(_REFUSAL.format(what="cropped (assisted or speculative decoding)"))

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError(_REFUSAL.format(what="repeated along the batch"))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError(_REFUSAL.format(what="narrowed along the batch (contrastive search)"))

    def offload(self) -> None:
        raise NotImplementedError(_REFUSAL.format(what="offloaded"))


_REFUSAL = "vtc's compacted KV-cache layer (cache stage) cannot be {what}; decode without a cache-stage method"


def _gather(states: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """states [B, H, S, d] at columns [B, S'] -> [B, H, S', d]."""
    batch, heads, _, dim = states.shape
    index = columns.to(states.device)[:, None, :, None].expand(batch, heads, columns.shape[1], dim)
    return torch.gather(states, 2, index)
