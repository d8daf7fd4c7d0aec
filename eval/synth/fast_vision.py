"""Training-time CPU speed-ups for the Qwen2.5-VL vision tower that compute the same function.

Without flash-attention, transformers runs the vision tower's attention once per window/video in
a Python loop (hundreds of tiny SDPA calls per training batch), and the patch embedding as a
Conv3d whose kernel equals its stride. Both are the same maths as one batched SDPA over equal-size
chunks and one matrix product, which on two CPU cores is what makes a training step affordable.
Only the running model is patched; weights and config stay stock, so a saved checkpoint is
identical to one trained without the patches.
"""
from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def speed_up_vision(model: nn.Module) -> None:
    """Patch ``model``'s vision tower in place (instance attributes only, nothing saved)."""
    visual = model.model.visual
    visual.patch_embed.forward = types.MethodType(_patch_embed_as_linear, visual.patch_embed)
    for block in visual.blocks:
        block.attn.forward = types.MethodType(_batched_chunk_attention, block.attn)


def _patch_embed_as_linear(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Conv3d with kernel == stride over exactly one kernel per row is a matrix product."""
    weight = self.proj.weight
    return F.linear(hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype), weight.reshape(weight.shape[0], -1))


def _batched_chunk_attention(
    self: nn.Module,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    **_: Any,
) -> torch.Tensor:
    """Block-diagonal attention over the chunks that ``cu_seqlens`` delimits; equal-length chunks
    (every clip has the same size here) go through one SDPA call, others fall back to a loop."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    seq_length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    if len(set(lengths)) == 1:
        chunks = len(lengths)
        q, k, v = (t.reshape(chunks, lengths[0], self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling).transpose(1, 2)
    else:
        out = torch.cat([
            F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in parts), scale=self.scaling)[0].transpose(0, 1)
            for parts in zip(*(t.split(lengths) for t in (q, k, v)))
        ])
    return self.proj(out.reshape(seq_length, -1))
