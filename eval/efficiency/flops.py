"""FLOP count of the language-model prefill: what an ideal implementation would save.

Counts the decoder layers' matrix products (attention projections, MLP) and causal attention
(Q K^T and A V over the lower triangle); norms, rotary and the LM head (one position) are ignored.
"""
from __future__ import annotations


def layer_flops(shape: dict, tokens: int) -> float:
    """Multiply-adds x 2 of one decoder layer over ``tokens`` positions, causal attention."""
    h, heads, kv = shape["hidden"], shape["heads"], shape["kv_heads"]
    head_dim = h // heads
    linear = h * (heads * head_dim + 2 * kv * head_dim) + heads * head_dim * h + 3 * h * shape["intermediate"]
    attention = 2 * heads * head_dim * tokens * (tokens + 1) / 2
    return 2.0 * (tokens * linear + attention)


def prefill_flops(shape: dict, per_layer_tokens: list[int]) -> float:
    return sum(layer_flops(shape, n) for n in per_layer_tokens)


def per_layer_tokens(sequence: int, visual: int, kept: int, cuts: dict[int, int], layers: int) -> list[int]:
    """Positions each layer processes: text + visual tokens kept, changed at a layer-stage cut."""
    out, current = [], kept
    for layer in range(layers):
        current = cuts.get(layer, current)
        out.append(sequence - visual + current)
    return out
