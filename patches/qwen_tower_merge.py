"""DyMU inside the Qwen VL towers: ToMe merging of whole merge units in every block, per frame group.

Each block's forward is replaced (an instance attribute, restored by unwrap) while a video is encoded by
the same steps with one addition between attention and MLP, where the official ``ToMEBlock`` merges:
attention runs on the units still alive (their rotary rows, each segment's alive rows; with proportional
attention, log of each unit's size added to its keys' logits), then each frame group's A units merge
into their most similar B units (``vtc.methods.dymu.bipartite_pairs`` on the block's keys averaged over
heads and over the unit's patches), patch by patch as size-weighted averages, and the MLP runs on what
is left. The mergers' output goes back to full length (zeros for merged-away units) so transformers'
placeholder check passes; the prefill hook drops those rows.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from vtc import attention
from vtc.engine.steps import device_clock
from vtc.patching import patch_attribute
from vtc.methods.dymu import bipartite_pairs

from .qwen_vision_stage import narrow_segments, tower_order


class QwenTowerMerge:
    """Per tower forward: which units are alive, their sizes, and whom each original unit went to."""

    def __init__(self, visual: nn.Module, stage: Any, windowed: bool, model_dir: str | None) -> None:
        self.visual, self.stage, self.windowed = visual, stage, windowed
        self.method = stage.method
        self.merge = int(visual.spatial_merge_size)
        self.unit = self.merge * self.merge
        self.blocks = len(visual.blocks)
        self.fixed = None  # merges per frame group per block (a fixed count), else thresholds
        self.thresholds: list[float] | None = None
        if self.method.merges_per_block(1, self.blocks, stage.budget) is None:
            self.thresholds = self.method.load_thresholds(model_dir, self.blocks)
        if self.method.proportional and attention.uses_flash(visual.config):
            raise ValueError(
                "dymu's proportional attention adds a bias to each key, which flash-attention's varlen kernel does "
                "not take: load the model with attn_implementation='sdpa' (or pass dymu(proportional=False))"
            )
        # The threshold finder's sink: (block, each frame's best A-to-B similarities, nominal merges per frame).
        self.record_similarities = getattr(stage, "similarity_sink", None)
        self.active = False

    def install(self) -> list[Callable[[], None]]:
        visual = self.visual
        removers = [h.remove for h in (
            visual.register_forward_pre_hook(self._start, with_kwargs=True),
            visual.register_forward_hook(self._finish),
        )]
        removers += [patch_attribute(blk, "forward", self._block_forward(i, blk)) for i, blk in enumerate(visual.blocks)]
        mergers = [visual.merger, *getattr(visual, "deepstack_merger_list", [])]
        removers += [m.register_forward_hook(self._widen).remove for m in mergers]
        return removers

    # -- tower lifecycle ----------------------------------------------------------------------------
    def _start(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.active = self.stage.active
        if not self.active:
            return
        self.merge_ms = 0.0  # the method's own time (matching and merging), not the tower's
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        self.grid = grid.tolist()
        order = tower_order(self.visual, grid, self.windowed)  # tower position -> raster unit
        units = order.numel()
        frame_of_raster = torch.cat([
            torch.arange(t, device=order.device).repeat_interleave(h * w // self.unit) + sum(g[0] for g in self.grid[:v])
            for v, (t, h, w) in enumerate(self.grid)
        ])
        self.raster_full = order  # raster unit at each tower position
        self.frame_full = frame_of_raster[order]  # frame group at each tower position
        self.alive = torch.arange(units, device=order.device)  # tower positions of alive units
        self.size = torch.ones(units, device=order.device)
        self.rep = torch.arange(units, device=order.device)  # tower position -> its representative's
        self.units = units
        self.per_frame = [h * w // self.unit for t, h, w in self.grid for _ in range(t)]
        self.fixed = self.method.merges_per_block(max(self.per_frame), self.blocks, self.stage.budget)
        self.carry = torch.zeros(len(self.per_frame), dtype=torch.long)
        if self.fixed is not None and self.stage.budget.is_set:
            targets = torch.tensor([n - self.stage.budget.count(n) for n in self.per_frame])
            self.left = targets.clone()  # merges still owed per frame group (budget form)
        else:
            self.left = None

    def _finish(self, *_: Any) -> None:
        if not self.active:
            return
        self.active = False
        # Each original unit's representative in raster order, per video, as the vision stage records it.
        raster_rep = torch.empty_like(self.rep)
        raster_rep[self.raster_full] = self.raster_full[self._resolve()]
        offset, notes = 0, ["no [CLS] in this tower: each token is a 2x2 merge unit, merged within its frame group"]
        if self.left is not None and int(self.left.clamp(min=0).sum()):
            notes.append(f"budget missed by {int(self.left.clamp(min=0).sum())} tokens: a block merges at most half its tokens")
        reps = []
        for t, h, w in self.grid:
            count = t * h * w // self.unit
            part = raster_rep[offset : offset + count] - offset
            reps.append(part)
            offset += count
        self.stage.record(reps, notes, self.merge_ms)

    def _resolve(self) -> torch.Tensor:
        """Each tower position's final representative (following merges of merges)."""
        rep = self.rep.clone()
        while True:
            nxt = rep[rep]
            if torch.equal(nxt, rep):
                return rep
            rep = nxt

    # -- the block ------------------------------------------------------------------------------------
    def _block_forward(self, index: int, block: nn.Module) -> Callable[..., torch.Tensor]:
        original = block.forward

        def forward(hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
            if not self.active:
                return original(hidden_states, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings, **kwargs)
            rows = (self.alive[:, None] * self.unit + torch.arange(self.unit, device=self.alive.device)).flatten()
            if rows.numel() != hidden_states.shape[0]:
                raise RuntimeError("dymu lost track of the tower's rows")
            narrowed = rows.numel() != self.units * self.unit
            if narrowed:
                cu_seqlens = narrow_segments(cu_seqlens, rows)
                position_embeddings = tuple(t[rows.to(t.device)] for t in position_embeddings)
                kwargs["max_seqlen"] = None
            keys: list[torch.Tensor] = []
            grab = block.attn.qkv.register_forward_hook(lambda _m, _a, out: keys.append(out))
            attn = block.attn
            sized = self.method.proportional and bool((self.size > 1).any())
            if sized:
                attn._vtc_key_bias = self.size.log().repeat_interleave(self.unit).to(hidden_states.device)
                attn._vtc_cursor = 0
                saved = attn.config._attn_implementation_internal
                attn.config._attn_implementation_internal = attention.sized_name(attn.config._attn_implementation)
            try:
                hidden = hidden_states + attn(block.norm1(hidden_states), cu_seqlens=cu_seqlens,
                                              position_embeddings=position_embeddings, **kwargs)
            finally:
                grab.remove()
                if sized:
                    attn.config._attn_implementation_internal = saved
                    del attn._vtc_key_bias, attn._vtc_cursor
            unit_keys = keys[0].detach().view(hidden.shape[0], 3, attn.num_heads, -1)[:, 1].float().mean(dim=1)
            hidden = self._merge(index, hidden, unit_keys.view(-1, self.unit, unit_keys.shape[-1]).mean(dim=1))
            return hidden + block.mlp(block.norm2(hidden))

        return forward

    def _merge(self, index: int, hidden: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Merge within each frame group; returns the hidden states of the units left (tower order)."""
        start = device_clock(hidden.device)
        try:
            return self._merge_units(index, hidden, keys)
        finally:
            self.merge_ms += (device_clock(hidden.device) - start) * 1000.0

    def _merge_units(self, index: int, hidden: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        src_all, dst_all, similarities = [], [], []
        frames, raster = self.frame_full[self.alive], self.raster_full[self.alive]
        for f in range(len(self.per_frame)):
            members = (frames == f).nonzero().flatten()
            if members.numel() < 2:
                similarities.append(torch.zeros(0))
                continue
            members = members[torch.argsort(raster[members])]  # raster order within the frame
            limit = threshold = None
            if self.fixed is not None:
                limit = self.fixed[index] + (int(self.carry[f]) if self.left is not None else 0)
                if self.left is not None:  # merge more now when the blocks left could not catch up
                    owed, later = int(self.left[f]), self.blocks - index - 1
                    while limit < members.numel() // 2 and owed - limit > capacity(members.numel() - limit, later):
                        limit += 1
                    limit = min(limit, owed)
            else:
                threshold = self.thresholds[index]
            src, dst, best = bipartite_pairs(keys[members], limit, threshold)
            similarities.append(best)
            if self.left is not None:
                done = src.numel()
                self.left[f] -= done
                self.carry[f] = max(0, (self.fixed[index] + int(self.carry[f])) - done)
            src_all.append(members[src])
            dst_all.append(members[dst])
        if self.record_similarities is not None and self.fixed is not None:
            self.record_similarities(index, similarities, self.fixed[index])
        src = torch.cat(src_all) if src_all else torch.zeros(0, dtype=torch.long)
        if not src.numel():
            return hidden
        dst = torch.cat(dst_all)
        width = hidden.shape[-1]
        units = hidden.view(-1, self.unit, width).float()
        weights = self.size[:, None, None].to(units.device)
        total = (units * weights).index_add(0, dst.to(units.device), units[src] * weights[src])
        size = self.size.index_add(0, dst, self.size[src])
        merged = (total / size[:, None, None].to(units.device)).to(hidden.dtype)
        self.rep[self.alive[src]] = self.alive[dst]
        keep = torch.ones(units.shape[0], dtype=torch.bool, device=src.device)
        keep[src] = False
        self.alive, self.size = self.alive[keep], size[keep]
        return merged[keep.to(merged.device)].reshape(-1, width)

    def _widen(self, _merger: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """A merger run on the alive units: its output at full length, zeros for merged-away units."""
        if not self.active or output.shape[0] == self.units:
            return None
        full = output.new_zeros(self.units, *output.shape[1:])
        full[self.alive.to(output.device)] = output
        return full


def capacity(tokens: int, blocks: int) -> int:
    """The most merges ``blocks`` ToMe blocks can make from ``tokens`` (each merges at most half)."""
    total = 0
    for _ in range(blocks):
        total += tokens // 2
        tokens -= tokens // 2
    return total
