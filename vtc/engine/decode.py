"""Decode remapping: generate() keeps building masks and positions for the full-length prompt; after a
compacted prefill the KV cache is shorter, so each decode step gets the mask of the rows that entered the
language model (plus its new tokens) and positions that continue the original prompt's."""
from __future__ import annotations

from typing import Any

import torch

from .state import ForwardState, args_kwargs


def decode_kwargs(state: ForwardState, adapter: Any, kwargs: dict) -> tuple[tuple, dict] | None:
    """The language model's arguments for one decode step on ``state``'s cache (None: unchanged)."""
    state.phase = "decode"
    if not state.rewritten:
        return None
    mask = kwargs.get("attention_mask")
    q_len = kwargs["inputs_embeds"].shape[1] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"].shape[1]
    if mask is None:
        extra = state.cache.get_seq_length() + q_len - state.mask_2d.shape[1]
        tail = state.mask_2d.new_ones(state.mask_2d.shape[0], extra)
    else:
        tail = mask[:, state.orig_len :]
    new_mask = torch.cat([state.mask_2d, tail.to(state.mask_2d.dtype)], dim=1)
    expected = state.cache.get_seq_length() + q_len
    if new_mask.shape[1] != expected:
        raise RuntimeError(
            f"vtc lost track of the sequence: the cache holds {state.cache.get_seq_length()} tokens, "
            f"{q_len} are new, but the padding mask maps to {new_mask.shape[1]}"
        )
    kwargs = dict(kwargs)
    kwargs["attention_mask"] = new_mask
    positions = kwargs.get("position_ids")
    if positions is None and adapter.rope == "1d":
        kwargs["position_ids"] = _continued_positions(state, q_len, new_mask.device)
    if positions is not None and adapter.has_text_position_row(positions):
        positions = positions.clone()
        positions[0] -= state.n_dropped.to(positions.device)[:, None]
        kwargs["position_ids"] = positions
    return args_kwargs(kwargs)


def _continued_positions(state: ForwardState, q_len: int, device: torch.device) -> torch.Tensor:
    """1D ids for new tokens when the caller passed none: original prompt length + step.

    The language model would count from the (shorter) cache length instead, shifting every
    decoded token by the number of dropped rows.
    """
    start = state.cache.get_seq_length() + state.orig_len - state.prefill.gather.shape[1]
    return torch.arange(start, start + q_len, device=device)[None]
