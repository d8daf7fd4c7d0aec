"""Attention recording that works under any attention implementation.

Layer-stage methods (FastV & co.) need the attention of the last prompt token at layer K-1;
FrameFusion may ask for the attention of the last few rows, or of every row (the attention each key
receives). Forcing eager attention to get it costs memory on long videos (+38-53% peak reported for
LLaVA-OV-7B), so vtc registers a thin attention function that computes the asked rows itself (in
chunks of rows, never the whole map) and otherwise calls the model's own implementation (sdpa,
flash-attention, eager, ...).
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
            # the recorder computes what it needs, if anything: attention_of() = the last row's, attention_of(r) the
            # mean of the last r rows', attention_of(0) the mean of every row's
            scaling = kwargs.get("scaling")
            recorder(module, lambda rows=1: rows_attention(query, key, attention_mask, scaling, rows))
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


CHUNK_ELEMENTS = 1 << 25  # scores held at once by rows_attention (128 MiB in float32)


def rows_attention(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None, rows: int = 1
) -> torch.Tensor:
    """Softmax attention over all keys averaged over heads and over the last ``rows`` queries (0: every query,
    i.e. the mean attention each key receives): [B, S], float32. ``rows=1`` is :func:`last_query_attention`.

    Query rows run in chunks of at most ``CHUNK_ELEMENTS`` scores, so no [B, H, Q, S] map is ever held. Query
    rows that see no key (left padding) are left out of the mean. Masks as :func:`last_query_attention`;
    without a 4D mask, causal (query i sees the keys up to its own position).
    """
    if rows == 1:
        return last_query_attention(query, key, mask, scaling)
    batch, heads, length, _ = query.shape
    k = key.float()
    if k.shape[1] != heads:
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
    keys = k.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    total = torch.zeros(batch, keys, dtype=torch.float32, device=query.device)
    counted = torch.zeros(batch, dtype=torch.float32, device=query.device)
    step = max(1, CHUNK_ELEMENTS // (batch * heads * keys))
    first = 0 if rows == 0 else max(0, length - rows)
    for start in range(first, length, step):
        stop = min(start + step, length)
        scores = (query[:, :, start:stop, :].float() @ k.transpose(-1, -2)) * scale  # [B, H, r, S]
        seen = _seen(mask, start + keys - length, stop + keys - length, keys, query.device)
        if seen.dtype == torch.bool:
            scores = scores.masked_fill(~seen, float("-inf"))
        else:
            scores = scores + seen.float()
            seen = seen > torch.finfo(seen.dtype).min / 2
        live = seen.any(dim=-1)  # [B or 1, 1, r]: rows that see at least one key
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0) * live[..., None]
        total += weights.mean(dim=1).sum(dim=1)
        counted += live[:, 0, :].float().sum(dim=1).expand(batch)
    return total / counted.clamp(min=1.0)[:, None]


def _seen(mask: torch.Tensor | None, start: int, stop: int, keys: int, device: torch.device) -> torch.Tensor:
    """Which keys the queries at positions start..stop see: bool [B or 1, 1, r, S], or the additive 4D mask's rows."""
    if mask is not None and mask.ndim == 4:
        return mask[:, :, start - keys + mask.shape[2] : stop - keys + mask.shape[2], -keys:]
    causal = torch.arange(keys, device=device)[None, :] <= torch.arange(start, stop, device=device)[:, None]
    causal = causal[None, None]
    if mask is not None:  # a 2D padding mask (flash attention): padding keys unseen, padding query rows see nothing
        padding = mask[:, -keys:].bool()
        causal = causal & padding[:, None, None, :] & padding[:, None, start:stop, None]
    return causal


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
