"""The vision stage inside the Qwen VL towers: a method decides at block K, blocks K+1.. and the mergers run on
what it kept.

The Qwen ViTs run on a flat patch sequence in which the ``merge**2`` patches of one language-model token
(a merge unit) are consecutive; attention is split into segments by ``cu_seqlens`` (one per frame group,
or per window on Qwen2.5-VL's windowed blocks), and rotary position embeddings travel with each patch.
Dropping whole units therefore leaves every later block well defined: the kept rows keep their rotary
rows, each segment keeps its kept rows, and the patch merger still sees whole units. The merger's output
is put back at full length (zeros for dropped units) so transformers' placeholder check passes; the
prefill hook then drops those rows. Everything here is hooks on the tower's modules, removed by unwrap.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from vtc.saliency import ats_saliency
from vtc.tokens import VisualTokens

NOTE = ("no [CLS] in this tower: dominant tokens ranked by the frame's mean-query (pseudo-[CLS]) attention at "
        "vision block {layer}, keys averaged over each merge unit's patches")


class QwenTowerCut:
    """Per tower forward: the window order, the kept patch rows after block K, and the hooks that use them."""

    def __init__(self, visual: nn.Module, stage: Any, windowed: bool) -> None:
        self.visual, self.stage, self.windowed = visual, stage, windowed
        self.merge = int(visual.spatial_merge_size)
        self.unit = self.merge * self.merge
        blocks = len(visual.blocks)
        layer = stage.method.layer
        self.layer = layer if layer >= 0 else blocks + layer
        if not 0 <= self.layer < blocks:
            raise ValueError(f"{stage.method.name}: vision layer {layer} is outside this {blocks}-block tower")
        self.grid: torch.Tensor | None = None
        self.order: torch.Tensor | None = None  # window position -> raster unit
        self.rotary: tuple[torch.Tensor, torch.Tensor] | None = None
        self.qk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.kept_rows: torch.Tensor | None = None  # patch rows kept after block K (in the tower's order)
        self.kept_units: torch.Tensor | None = None
        self.units = 0

    def install(self) -> list[Callable[[], None]]:
        visual = self.visual
        handles = [
            visual.register_forward_pre_hook(self._start, with_kwargs=True),
            visual.register_forward_hook(self._finish),
            visual.blocks[self.layer].register_forward_pre_hook(self._read, with_kwargs=True),
            visual.blocks[self.layer].attn.qkv.register_forward_hook(self._grab),
            visual.blocks[self.layer].register_forward_hook(self._cut, with_kwargs=True),
        ]
        handles += [blk.register_forward_pre_hook(self._narrow, with_kwargs=True) for blk in visual.blocks[self.layer + 1:]]
        mergers = [visual.merger, *getattr(visual, "deepstack_merger_list", [])]
        handles += [m.register_forward_hook(self._widen) for m in mergers]
        return [h.remove for h in handles]

    # -- hooks -------------------------------------------------------------------------------------------
    def _start(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.kept_rows = self.kept_units = self.qk = None
        if not self.stage.active:
            self.grid = None
            return
        self.grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        self.order = tower_order(self.visual, self.grid, self.windowed)
        self.units = self.order.numel()

    def _finish(self, *_: Any) -> None:
        self.grid = self.order = self.rotary = self.qk = self.kept_rows = self.kept_units = None

    def _read(self, _block: nn.Module, _args: tuple, kwargs: dict) -> None:
        """Block K's rotary embeddings, to rotate the queries and keys its attention projects."""
        if self.grid is not None:
            self.rotary = kwargs["position_embeddings"]

    def _grab(self, attn_qkv: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        """Block K's queries and keys as its attention computes them (rotated) and its raw keys, taken from the
        attention's own projection (no second one)."""
        if self.grid is None:
            return
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        heads = self.visual.blocks[self.layer].attn.num_heads
        q, k, _ = output.detach().reshape(output.shape[0], 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        q_rot, k_rot = apply_rotary_pos_emb_vision(q, k, *self.rotary)
        self.qk = (q_rot, k_rot, k)

    def _cut(self, _block: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """Hand each video's units to the method, keep its choice (merged features in place) and drop the rest."""
        if self.grid is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        width = hidden.shape[-1]
        raster = torch.argsort(self.order.to(hidden.device))  # raster unit -> window position
        units = hidden.view(self.units, self.unit, width)[raster]  # raster order
        q_rot, k_rot, k_raw = (t.view(self.units, self.unit, *t.shape[1:])[raster] for t in self.qk)
        videos, offset = [], 0
        for t, h, w in self.grid.tolist():
            count = t * h * w // self.unit
            part = slice(offset, offset + count)
            offset += count
            grid = (t, h // self.merge, w // self.merge)
            tokens = VisualTokens.from_grid(units[part].reshape(count, -1), grid)
            tokens.vision_saliency = ats_saliency(
                q_rot[part].reshape(count * self.unit, *q_rot.shape[2:]),
                k_rot[part].reshape(count * self.unit, *k_rot.shape[2:]), (t, h, w), self.merge,
            ).flatten().to(hidden.device)
            tokens.vision_keys = k_raw[part].float().mean(dim=2).mean(dim=1)  # heads, then the unit's patches
            videos.append(tokens)
        selections = self.stage.compress(videos, [NOTE.format(layer=self.layer)])
        self.qk = None
        kept, features, offset = [], [], 0
        for tokens, selection in zip(videos, selections):
            kept.append(selection.keep + offset)
            features.append(tokens.features[selection.keep] if selection.features is None else selection.features)
            offset += len(tokens)
        kept_raster = torch.cat(kept)
        if kept_raster.numel() == self.units and all(s.features is None for s in selections):
            return None  # nothing dropped or merged: the tower runs as it would unwrapped
        new_units = units.clone()
        new_units[kept_raster] = torch.cat(features).view(-1, self.unit, width).to(hidden.dtype)
        window_pos = torch.sort(raster[kept_raster]).values
        self.kept_units = window_pos
        self.kept_rows = (window_pos[:, None] * self.unit + torch.arange(self.unit, device=hidden.device)).flatten()
        reduced = new_units[self.order.to(hidden.device)][window_pos].reshape(-1, width)  # back to tower order, kept only
        return (reduced, *output[1:]) if isinstance(output, tuple) else reduced

    def _narrow(self, _block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Later blocks: the kept rows' rotary embeddings and each attention segment's kept rows."""
        if self.kept_rows is None:
            return None
        rows = self.kept_rows
        kwargs = dict(kwargs)
        kwargs["position_embeddings"] = tuple(t[rows.to(t.device)] for t in kwargs["position_embeddings"])
        kwargs["cu_seqlens"] = narrow_segments(kwargs["cu_seqlens"], rows)
        kwargs["max_seqlen"] = None  # flash attention recomputes it from cu_seqlens
        return args, kwargs

    def _widen(self, _merger: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """A merger run on the kept units: its output at full length, zeros for dropped units."""
        if self.kept_units is None or output.shape[0] != self.kept_units.numel():
            return None
        full = output.new_zeros(self.units, *output.shape[1:])
        full[self.kept_units.to(output.device)] = output
        return full


def tower_order(visual: nn.Module, grid: torch.Tensor, windowed: bool) -> torch.Tensor:
    """The raster merge unit at each position of the tower's sequence (Qwen2.5-VL runs its blocks on
    window-ordered units; the other towers in raster order)."""
    if not windowed:
        merge = int(visual.spatial_merge_size)
        return torch.arange(int(grid.prod(dim=1).sum()) // (merge * merge), device=grid.device)
    from transformers.vision_utils import get_vision_window_index

    order, _ = get_vision_window_index(grid, spatial_merge_size=int(visual.spatial_merge_size),
                                       window_size=visual.window_size, patch_size=visual.patch_size)
    return order.to(grid.device)


def narrow_segments(cu_seqlens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Segment boundaries over the kept ``rows`` (sorted) of a packed sequence: each attention segment keeps
    its kept rows, and a segment left empty disappears."""
    narrowed = torch.searchsorted(rows.to(cu_seqlens.device), cu_seqlens.long(), right=False).to(cu_seqlens.dtype)
    return torch.unique_consecutive(narrowed)
