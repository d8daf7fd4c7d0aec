"""M-RoPE positions of a prompt whose videos keep fewer tokens than their grids hold (numpy, no vLLM import).

Kept tokens keep their original (t, h, w) positions, text keeps the positions it has in the uncompressed
prompt, and decoding continues where the uncompressed prompt would: what ``vtc.wrap`` does on transformers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MediaItem:
    """One image or video of a prompt: where its placeholder run starts and how long it is in the prompt,
    its uncompressed positions relative to its start ([3, T*H*W]: t scaled by the time factor, h, w) and
    those of the tokens it keeps ([3, length], in prompt order)."""

    offset: int
    length: int
    relative: np.ndarray
    height: int
    width: int
    kept: np.ndarray


def grid_positions(t: int, h: int, w: int, t_factor: float = 1.0) -> np.ndarray:
    """[3, t*h*w] (t, h, w) positions of a merged token grid, t-major, t scaled and floored as Qwen2.5-VL does."""
    grid = np.indices((t, h, w)).reshape(3, -1)
    if t_factor != 1.0:
        grid[0] = (grid[0] * t_factor).astype(np.int64)
    return grid.astype(np.int64)


def prompt_positions(length: int, items: list[MediaItem], convention: str = "vllm") -> tuple[np.ndarray, int]:
    """Positions [3, length] and the decode delta (next position - length) of a prompt.

    ``convention`` says where text after an item continues: "vllm" after its
    largest position, "transformers" max(h, w) after its start (transformers 5.x's get_rope_index).
    """
    parts, pos, cursor, highest = [], 0, 0, -1
    for item in sorted(items, key=lambda i: i.offset):
        text = item.offset - cursor
        parts.append(np.broadcast_to(np.arange(text), (3, text)) + pos)
        start = pos + text
        if item.kept.shape[1] != item.length:
            raise ValueError(f"{item.kept.shape[1]} kept positions for a run of {item.length} placeholders")
        parts.append(item.kept + start)
        highest = max(highest, int(item.relative.max()) + start)
        pos = start + (int(item.relative.max()) + 1 if convention == "vllm" else max(item.height, item.width))
        cursor = item.offset + item.length
    tail = length - cursor
    parts.append(np.broadcast_to(np.arange(tail), (3, tail)) + pos)
    positions = np.concatenate(parts, axis=1).astype(np.int64)
    highest = max(highest, int(positions.max()) if positions.size else -1)
    return positions, highest + 1 - length
