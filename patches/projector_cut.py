"""The vision stage on towers whose features reach the language model through a projector that transformers
runs on the whole tower output: the method decides on the projector's input rows, one per language-model
token (Video-LLaVA: one per patch, the [CLS] row first; LLaVA-NeXT-Video: one per 2x2-pooled block;
InternVL and SmolVLM: one per pixel-shuffled block), or on LLaVA-OneVision's rows after its pooling.

The attention that ranks tokens and the head-averaged keys are read at the encoder layer whose output
becomes the video features (VisionZip's "penultimate layer" in LLaVA): the [CLS] query's where the tower has
one, else the frame's mean query (a pseudo-[CLS], as FastVID's ATS), summed (attention) or averaged (keys)
over each row's patches where a row holds several. Transformers runs the whole tower regardless, so nothing
is saved inside the encoder here: the saving is in the language model. Dropped rows leave at the prefill hook.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from vtc.tokens import VisualTokens

NOTE = "[CLS] attention and keys read at vision layer {layer}; the tower runs whole (features cut {where})"
NO_CLS_NOTE = ("no [CLS] in this tower: dominant tokens ranked by the frame's mean-query (pseudo-[CLS]) attention at "
               "vision layer {layer}; the tower runs whole (features cut {where})")


Reader = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ProjectorCut:
    """Hooks on one encoder layer's attention (to read it) and on the projector (to apply the decision).

    ``frames`` gives, per video (or prompt) being encoded, its frames in order; ``read`` returns the [CLS]
    query's attention [frames, heads, S] and the keys [frames, heads, S, head_dim] from the attention's input;
    ``pool`` maps per-patch values [frames, patches, ...] onto the projector's rows (None: one row per patch);
    ``cls_row``: the projector input starts each frame with the [CLS] row (kept, outside the method's rows);
    ``tower_cls``: the tower's sequence starts with a [CLS] (else ``read`` gives a pseudo-[CLS] query's
    attention over the patches only). ``frames`` returning None: each frame is decided on its own.
    """

    def __init__(self, attention: nn.Module, projector: nn.Module, stage: Any, layer: int, grid: tuple[int, int],
                 frames: Callable[[], list[int] | None], read: Reader, pool: Callable[..., torch.Tensor] | None = None,
                 cls_row: bool = True, tower_cls: bool = True) -> None:
        self.attention, self.projector, self.stage, self.layer = attention, projector, stage, layer
        self.grid, self.frames, self.reader, self.pool, self.cls_row = grid, frames, read, pool, cls_row
        self.first_patch = 1 if tower_cls else 0
        self.note = (NOTE if tower_cls else NO_CLS_NOTE).format(layer=layer, where="before the projector")
        self.read: tuple[torch.Tensor, torch.Tensor] | None = None

    def install(self) -> list[Callable[[], None]]:
        handles = [
            self.attention.register_forward_pre_hook(self._read, with_kwargs=True),
            self.projector.register_forward_pre_hook(self._cut),
        ]
        return [h.remove for h in handles]

    def install_after(self, owner: Any, method: str) -> list[Callable[[], None]]:
        """Decide on the output of ``owner.method`` instead of the projector's input (LLaVA-OneVision's rows
        exist only after the pooling that follows its projector); the wrapper is an instance attribute."""
        from vtc.patching import patch_attribute

        original = getattr(owner, method)
        self.note = self.note.replace("before the projector", f"after the projector, at the output of {method}")

        @functools.wraps(original)
        def decide_after(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = original(*args, **kwargs)
            cut = self._cut(None, (out,))
            return out if cut is None else cut[0]

        handle = self.attention.register_forward_pre_hook(self._read, with_kwargs=True)
        return [handle.remove, patch_attribute(owner, method, decide_after)]

    def _read(self, attention: nn.Module, args: tuple, kwargs: dict) -> None:
        """Per row: the [CLS] attention summed over heads (softmax over all keys, as eager attention) and the
        keys averaged over heads."""
        if not self.stage.active:
            return
        weights, keys = self.reader(attention, args[0] if args else kwargs["hidden_states"])
        scores, keys = weights.sum(dim=1)[:, self.first_patch:], keys.mean(dim=1)[:, self.first_patch:]
        if self.pool is not None:
            scores, keys = self.pool(scores, how="sum"), self.pool(keys, how="mean")
        self.read = (scores, keys)

    def _cut(self, _projector: nn.Module, args: tuple) -> tuple | None:
        if not self.stage.active or self.read is None:
            return None
        hidden = args[0]  # [frames, (1 +) rows, C]
        first = 1 if self.cls_row else 0
        scores, keys = self.read
        self.read = None
        rows = hidden.shape[1] - first
        videos, start = [], 0
        for count in self.frames() or [1] * hidden.shape[0]:
            part = slice(start, start + count)
            start += count
            tokens = VisualTokens.from_grid(hidden[part, first:].reshape(count * rows, -1), (count, *self.grid))
            tokens.vision_saliency = scores[part].reshape(-1).to(hidden.device)
            tokens.vision_keys = keys[part].reshape(count * rows, -1).to(hidden.device)
            tokens.vision_cls = self.cls_row
            videos.append(tokens)
        if start != hidden.shape[0]:
            raise ValueError(f"the projector received {hidden.shape[0]} frames but the prompts hold {start}")
        selections = self.stage.compress(videos, [self.note])
        if all(s.features is None for s in selections):
            return None  # dropped rows leave at the prefill hook; kept rows are unchanged
        out = hidden.clone()
        start = 0
        for tokens, selection in zip(videos, selections):
            count = len(tokens) // rows
            if selection.features is not None:
                block = out[start : start + count, first:].reshape(count * rows, -1)
                block[selection.keep] = selection.features.to(out.dtype)
                out[start : start + count, first:] = block.view(count, rows, -1)
            start += count
        return (out, *args[1:])


def cls_attention_and_keys(attention: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[frames, heads, S] the [CLS] query's softmax attention over all keys and [frames, heads, S, head_dim] the
    keys, recomputed from the layer's own input and projections as eager attention would (the layer may run
    sdpa or flash-attention, which return no weights)."""
    with torch.no_grad():
        batch, length, _ = hidden.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        query = attention.q_proj(hidden[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
        key = attention.k_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2).float()
        scores = (query.float() @ key.transpose(-1, -2)) * attention.scale
        return torch.softmax(scores, dim=-1)[:, :, 0], key


def pool_blocks(values: torch.Tensor, how: str, height: int, width: int) -> torch.Tensor:
    """[frames, P, ...] per-patch values (a square patch grid in raster order) summed or averaged over the block
    of patches behind each of the height x width rows the projector receives (pixel shuffle, 2x2 pooling);
    patches a flooring pooler leaves out are left out here too."""
    frames, count = values.shape[:2]
    side = int(round(count**0.5))
    block_h, block_w = side // height, side // width
    grid = values.reshape(frames, side, side, *values.shape[2:])[:, : height * block_h, : width * block_w]
    blocks = grid.reshape(frames, height, block_h, width, block_w, *values.shape[2:])
    pooled = blocks.mean(dim=(2, 4)) if how == "mean" else blocks.sum(dim=(2, 4))
    return pooled.reshape(frames, height * width, *values.shape[2:])


def mean_query_attention_and_keys(attention: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For towers without a [CLS] (SigLIP): [frames, heads, S] the attention of the frame's mean query (the
    pseudo-[CLS] of FastVID's ATS) over the patches, and [frames, heads, S, head_dim] the keys."""
    with torch.no_grad():
        batch, length, _ = hidden.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        query = attention.q_proj(hidden).view(batch, length, heads, head_dim).float().mean(dim=1)  # [F, H, d]
        key = attention.k_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2).float()
        scores = torch.einsum("bhd,bhsd->bhs", query, key) * attention.scale
        return torch.softmax(scores, dim=-1), key


def bilinear_pool(values: torch.Tensor, how: str, height: int, width: int) -> torch.Tensor:
    """[frames, P, ...] per-patch values (a square grid) resized to height x width rows by bilinear interpolation,
    as LLaVA-OneVision pools its projected features (``how`` is ignored: interpolation weighs every value)."""
    frames, count = values.shape[:2]
    side = int(round(count**0.5))
    grid = values.reshape(frames, side, side, -1).permute(0, 3, 1, 2).float()
    pooled = torch.nn.functional.interpolate(grid, size=(height, width), mode="bilinear")
    return pooled.permute(0, 2, 3, 1).reshape(frames, height * width, *values.shape[2:])
