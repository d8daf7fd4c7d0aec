"""Video-like visual tokens at realistic sizes, without a model: what the budget tests at scale feed the methods.

A real video is mostly a static scene seen again and again plus a few moving things; methods that
merge static tokens over time (HoliTom, PruneVid) and methods that rank change (DTD, DyCoke) behave
very differently on the two, so both are present: a fixed background per position (with a little
per-frame noise and a slow drift, as ``eval/bench_methods.py``'s generator) and a 3x3 object that
moves one cell per frame along the rows.
"""
from __future__ import annotations

import torch

from vtc import VisualTokens

# (frame groups, grid side): 8 x 4x4 = 128 (the tiny families), 16 x 14x14 = 3,136 and 64 x 14x14 = 12,544
# (Qwen2.5-VL at 392 px: 28x28 patches merged 2x2 into 14x14 per temporal pair, for 32 and 128 frames).
SIZES = {128: (8, 4), 3136: (16, 14), 12544: (64, 14)}


def video_tokens(frames: int, side: int, dim: int = 16, seed: int = 0) -> VisualTokens:
    """Tokens of a ``frames`` x ``side`` x ``side`` grid with a ViT saliency (the object is salient) and a
    last-token attention (random), so methods of every stage find the inputs they need."""
    g = torch.Generator().manual_seed(seed)
    n = side * side
    background = torch.randn(n, dim, generator=g)
    drift = torch.linspace(0, 1, frames)[:, None, None] * torch.randn(1, n, dim, generator=g) * 0.5
    x = background[None] + 0.3 * torch.randn(frames, n, dim, generator=g) + drift
    size = min(3, side)
    thing = torch.randn(dim, generator=g) * 2.0
    salient = torch.rand(frames, n, generator=g) * 0.5
    for t in range(frames):
        top, left = (t // side) % (side - size + 1), t % (side - size + 1)
        cells = [(top + i) * side + left + j for i in range(size) for j in range(size)]
        x[t, cells] = thing + 0.1 * torch.randn(len(cells), dim, generator=g)
        salient[t, cells] += 1.0
    tokens = VisualTokens.from_grid(x.reshape(frames * n, dim), (frames, side, side))
    tokens.vision_saliency = torch.softmax(salient, dim=-1).flatten()
    tokens.attn = torch.softmax(torch.randn(frames * n, generator=g), dim=0)
    return tokens
