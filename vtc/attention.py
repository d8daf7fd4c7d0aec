"""Last-query attention recording that works under any attention implementation.

Layer-stage methods (FastV & co.) need the attention of the last prompt token at layer K-1.
Forcing eager attention to get it costs memory on long videos (+38-53% peak reported for
LLaVA-OV-7B), so vtc registers a thin attention function that computes that one row itself
and otherwise calls the model's own implementation (sdpa, flash-attention, eager, ...).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "vtc+"


def recording_name(original: str) -> str:
    """Register (once) and return the implementation name that records and then calls ``original``."""
    name = PREFIX + original
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _recording_attention(original))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


def uses_flash(config: object) -> bool:
    """Whether a config's attention implementation is flash attention (which takes a 2D padding mask, not 4D);
    vtc's recording variant keeps the name of the implementation it wraps."""
    return "flash" in str(getattr(config, "_attn_implementation", ""))


def _recording_attention(original: str) -> Callable[..., Any]:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any):
        recorder = getattr(module, "_vtc_recorder", None)
        if recorder is not None:
            recorder(module, last_query_attention(query, key, attention_mask, kwargs.get("scaling")))
        if getattr(module, "_vtc_probe", False):
            # only the recorded row was wanted (a cut ranking with this layer's attention before it runs)
            batch, heads, length, _ = query.shape
            return query.new_zeros(batch, length, heads, value.shape[-1]), None
        return _implementation(module, original)(module, query, key, value, attention_mask, **kwargs)

    return attention


def _implementation(module: torch.nn.Module, name: str) -> Callable[..., Any]:
    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(f"cannot find the {name!r} attention of {type(module).__name__}")
    return eager


def last_query_attention(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    """Head-averaged softmax attention of the last query over all keys: [B, S], float32.

    query [B, H, Q, d], key [B, Hkv, S, d] (grouped-query heads are repeated). ``mask`` is a 4D
    bool/additive mask, a 2D padding mask (flash-attention) or None (plain causal).
    """
    q = query[:, :, -1:, :].float()
    k = key.float()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, 1, S]
    if mask is not None:
        if mask.ndim == 4:
            last = mask[:, :, -1:, -k.shape[2]:]
            scores = scores.masked_fill(~last, float("-inf")) if last.dtype == torch.bool else scores + last.float()
        elif mask.ndim == 2:
            scores = scores.masked_fill(~mask[:, None, None, -k.shape[2]:].bool(), float("-inf"))
    return torch.softmax(scores, dim=-1).mean(dim=1)[:, 0, :]


SIZED_PREFIX = "vtc-sized+"


def sized_name(original: str) -> str:
    """Register (once) and return the implementation that adds a per-key bias to ``original``'s logits: ToMe's
    proportional attention (log of each merged token's size), for vision towers that pass no mask. The
    module carries the bias for its whole packed sequence (``_vtc_key_bias``); the tower calls the function
    once per attention segment, in order, so a cursor walks it."""
    name = SIZED_PREFIX + original
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _sized_attention(original))
    return name


def _sized_attention(original: str) -> Callable[..., Any]:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any):
        bias = getattr(module, "_vtc_key_bias", None)
        if bias is not None:
            start, length = module._vtc_cursor, key.shape[2]
            module._vtc_cursor = start + length
            attention_mask = bias[start : start + length].view(1, 1, 1, length).to(query.dtype)
        return _implementation(module, original)(module, query, key, value, attention_mask, **kwargs)

    return attention
