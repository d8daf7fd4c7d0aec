"""ATS saliency of each video token from vLLM's Qwen2.5-VL and Qwen3-VL vision towers: what fastvid and holitom rank by.

vLLM's ``Qwen2_5_VisionAttention`` rotates each block's queries and keys and hands them to its attention kernel
(``MMEncoderAttention``) as ``query=`` and ``key=``; a forward pre-hook on the last block's kernel reads them
during the one tower pass the plugin makes per video, and :func:`vtc.saliency.ats_saliency` (the function the
transformers path uses) turns them into one saliency per merged token. Qwen2.5-VL's tower runs on window-ordered
merge units; ``window_index`` from the tower's own encoder metadata puts them back in raster order. Qwen3-VL's
blocks (the same attention class) attend per frame in raster order: no window index.

With tensor parallelism the tower's heads are split over ranks and each rank would rank by its own heads, so
the plugin refuses saliency methods there at start-up (:mod:`.startup`).
"""
from __future__ import annotations

from typing import Any

import torch

from ...saliency import ats_saliency


class LastBlockQueriesKeys:
    """Around one vision-tower call: the rotated queries and keys [S, heads, head_dim] its last block attends with."""

    def __init__(self, visual: Any) -> None:
        self._kernel = visual.blocks[-1].attn.attn
        self.query: torch.Tensor | None = None
        self.key: torch.Tensor | None = None

    def __enter__(self) -> "LastBlockQueriesKeys":
        self._handle = self._kernel.register_forward_pre_hook(self._read, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _read(self, _module: Any, args: tuple, kwargs: dict) -> None:
        query, key = (kwargs["query"], kwargs["key"]) if "query" in kwargs else args[:2]
        self.query, self.key = (t.detach().reshape(-1, *t.shape[-2:]) for t in (query, key))


def video_saliency(read: LastBlockQueriesKeys, window_index: torch.Tensor | None, grid_thw: tuple[int, int, int],
                   merge: int) -> torch.Tensor:
    """Saliency [T*H*W/merge^2] (t-major raster of merged tokens) of the one video the tower just encoded;
    ``window_index``: the tower's order of merge units (Qwen2.5-VL), None when it keeps raster order (Qwen3-VL)."""
    if read.query is None or read.key is None:
        raise RuntimeError("vtc: the vision tower's last block did not run its attention: no saliency to read")
    if window_index is None:
        return ats_saliency(read.query, read.key, grid_thw, merge).flatten()
    unit = merge * merge
    order = torch.argsort(window_index.to(read.query.device))

    def raster(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, unit, *t.shape[1:])[order].reshape(t.shape)

    return ats_saliency(raster(read.query), raster(read.key), grid_thw, merge).flatten()
