"""Saliency of each visual token from the vision tower's last block (FastVID's ATS, HoliTom's).

Video LLMs' ViTs (Qwen's included) have no [CLS] token; FastVID's ATS uses the mean of a frame's
queries as a pseudo-[CLS] query. The family adapter captures the last block's rotated queries and
keys while a video is encoded; this module turns them into one saliency per merged visual token.
"""
from __future__ import annotations

import math

import torch


def ats_saliency(q: torch.Tensor, k: torch.Tensor, grid_thw: tuple[int, int, int], merge: int = 2) -> torch.Tensor:
    """ATS saliency [T, gh*gw/merge^2] from the last ViT block's rotated queries and keys.

    ``q``, ``k``: [T*gh*gw, heads, head_dim] in merge-unit order (the ``merge**2`` patches of a
    unit are consecutive, units in raster order, frames major). Per frame and head, the pseudo-[CLS]
    query (mean over all the frame's patches) attends over the merge units' mean keys; softmax in
    float32, then the mean over heads. The official code runs on window-ordered tokens and
    un-permutes the result, which is the same thing since it only ever acts on whole units.
    """
    t, gh, gw = (int(v) for v in grid_thw)
    unit = merge * merge
    heads, head_dim = q.shape[1], q.shape[2]
    pseudo_cls = q.float().view(t, gh * gw, heads, head_dim).mean(dim=1)  # [T, H, hd]
    unit_keys = k.float().view(t, gh * gw // unit, unit, heads, head_dim).mean(dim=2)  # [T, M, H, hd]
    logits = torch.einsum("thd,tmhd->thm", pseudo_cls, unit_keys) / math.sqrt(head_dim)
    return torch.softmax(logits, dim=-1).mean(dim=1)
