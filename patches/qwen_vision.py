"""Reading the Qwen vision tower's last block for ViT-attention saliency (FastVID's ATS, HoliTom).

The block's attention computes its queries and keys internally, so a pre-hook on it recomputes
them from the same input (one extra ``qkv`` projection of the last block, a small share of the
encoder's cost) and applies the same rotary embedding. Qwen2.5-VL runs its blocks on
window-ordered merge units; the saliency is put back into raster order, the order of the LLM's
visual rows.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vtc.saliency import ats_saliency

Sink = Callable[[list[torch.Tensor]], None]


def record_last_block_saliency(visual: nn.Module, windowed: bool, sink: Sink) -> list[Callable[[], None]]:
    """Hooks that hand ``sink`` one flattened saliency [T*M] per encoded item on every forward of ``visual``."""
    merge = int(visual.spatial_merge_size)
    grids: list[torch.Tensor] = []

    def grab_grid(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        grids.append(kwargs["grid_thw"] if "grid_thw" in kwargs else args[1])

    def read_last_block(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        q, k = rotated_queries_keys(module, hidden, kwargs["position_embeddings"])
        grid = grids.pop()
        if windowed:
            q, k = (_raster_order(t, grid, visual, merge) for t in (q, k))
        sizes = grid.prod(dim=1).tolist()
        sink([ats_saliency(qv, kv, tuple(g), merge).flatten()
              for qv, kv, g in zip(q.split(sizes), k.split(sizes), grid.tolist())])

    handles = [visual.register_forward_pre_hook(grab_grid, with_kwargs=True),
               visual.blocks[-1].attn.register_forward_pre_hook(read_last_block, with_kwargs=True)]
    return [h.remove for h in handles]


def rotated_queries_keys(
    attn: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention's own queries and keys [S, heads, head_dim], after the vision rotary embedding."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    with torch.no_grad():
        q, k, _ = attn.qkv(hidden).reshape(hidden.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        return apply_rotary_pos_emb_vision(q, k, *position_embeddings)


def _raster_order(t: torch.Tensor, grid: torch.Tensor, visual: nn.Module, merge: int) -> torch.Tensor:
    """Undo Qwen2.5-VL's window permutation of whole merge units."""
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(grid, spatial_merge_size=merge, window_size=visual.window_size,
                                              patch_size=visual.patch_size)
    unit = merge * merge
    units = t.reshape(-1, unit, *t.shape[1:])
    return units[torch.argsort(window_index.to(t.device))].reshape(t.shape)
