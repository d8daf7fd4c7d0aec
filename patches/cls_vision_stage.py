"""The vision stage on CLIP-style towers with a real [CLS] whose projector maps each tower token to one
language-model row (Video-LLaVA): the method decides on the feature layer's output, before the projector.

The [CLS] query's attention and the head-averaged keys are read at the encoder layer whose output becomes
the video features (VisionZip's "penultimate layer" in LLaVA); the projector then receives the method's
features (merged ones at their targets). Transformers runs the whole tower regardless, so nothing is
saved inside the encoder here: the saving is in the language model. Dropped rows leave at the prefill hook.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from vtc.tokens import VisualTokens

NOTE = "[CLS] attention and keys read at vision layer {layer}; the tower runs whole (features cut before the projector)"


class ClsProjectorCut:
    """Hooks on one encoder layer's attention (to read it) and on the projector (to apply the decision)."""

    def __init__(self, attention: nn.Module, projector: nn.Module, stage: Any, layer: int, grid: tuple[int, int],
                 frames_per_video: Callable[[], int]) -> None:
        self.attention, self.projector, self.stage, self.layer = attention, projector, stage, layer
        self.grid, self.frames_per_video = grid, frames_per_video
        self.read: tuple[torch.Tensor, torch.Tensor] | None = None

    def install(self) -> list[Callable[[], None]]:
        handles = [
            self.attention.register_forward_pre_hook(self._read, with_kwargs=True),
            self.projector.register_forward_pre_hook(self._cut),
        ]
        return [h.remove for h in handles]

    def _read(self, attention: nn.Module, args: tuple, kwargs: dict) -> None:
        """[frames, patches] [CLS] attention summed over heads (softmax over all keys, as eager attention) and
        [frames, patches, head_dim] keys averaged over heads."""
        if not self.stage.active:
            return
        weights, keys = cls_attention_and_keys(attention, args[0] if args else kwargs["hidden_states"])
        self.read = (weights.sum(dim=1)[:, 1:], keys.mean(dim=1)[:, 1:])

    def _cut(self, _projector: nn.Module, args: tuple) -> tuple | None:
        if not self.stage.active or self.read is None:
            return None
        hidden = args[0]  # [frames, 1 + patches, C], the [CLS] first
        cls, keys = self.read
        self.read = None
        frames = self.frames_per_video()
        patches = hidden.shape[1] - 1
        videos = []
        for start in range(0, hidden.shape[0], frames):
            part = slice(start, start + frames)
            tokens = VisualTokens.from_grid(hidden[part, 1:].reshape(frames * patches, -1), (frames, *self.grid))
            tokens.vision_saliency = cls[part].reshape(-1).to(hidden.device)
            tokens.vision_keys = keys[part].reshape(frames * patches, -1).to(hidden.device)
            tokens.vision_cls = True
            videos.append(tokens)
        selections = self.stage.compress(videos, [NOTE.format(layer=self.layer)])
        if all(s.features is None for s in selections):
            return None  # dropped rows leave at the prefill hook; kept rows are unchanged
        out = hidden.clone()
        for video, (tokens, selection) in enumerate(zip(videos, selections)):
            if selection.features is None:
                continue
            patch_rows = out[video * frames : (video + 1) * frames, 1:].reshape(frames * patches, -1)
            patch_rows[selection.keep] = selection.features.to(out.dtype)
            out[video * frames : (video + 1) * frames, 1:] = patch_rows.view(frames, patches, -1)
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
