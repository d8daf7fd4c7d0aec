"""Selections made when vLLM asks for a prompt's positions, handed over when it then asks for the video's features.

vLLM 0.32's model runner calls ``get_mrope_input_positions`` when the scheduler first hands it a request, and
``embed_multimodal`` for the request's videos in the same step (or when chunked prefill reaches them). Kept
tokens' positions need the selection, so the first call already encodes the video and runs the method; kept
here, its result spares the second call the vision tower. The two calls share no key (the runner batches the
videos' pixels without their hashes), so a video is recognised by its pixels: the same grid and time step,
then a 64-value sample, then every value (exact equality, no hash that could collide).

An entry nobody takes (vLLM's encoder cache already held that video, or the request was aborted) is dropped
once ``capacity`` newer ones arrived; a video not found is encoded again, which gives the same selection from
the same inputs, only slower: ``misses`` counts those.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

SAMPLE = 64


# One video's selection from its pixels and key: (kept features [K, D], their indices among its tokens).
Selector = Callable[[torch.Tensor, tuple], tuple[torch.Tensor, torch.Tensor]]


def video_key(grid_thw: torch.Tensor, seconds: float | None) -> tuple[tuple[int, int, int], float]:
    """What a video's selection depends on besides its pixels: its patch grid (T, H, W) and seconds per
    temporal token (1.0 when none is known, as ``vtc.wrap`` assumes)."""
    t, h, w = (int(v) for v in grid_thw.reshape(-1).tolist())
    return (t, h, w), 1.0 if seconds is None else float(seconds)


@dataclass(eq=False)  # identity: deque.remove must not compare tensors
class _Entry:
    key: tuple
    sample: torch.Tensor
    pixels: torch.Tensor
    features: torch.Tensor
    source: torch.Tensor


def _sample(pixels: torch.Tensor) -> torch.Tensor:
    """``SAMPLE`` values spread over the tensor, on the CPU: a cheap first test before comparing everything."""
    flat = pixels.reshape(-1)
    index = torch.linspace(0, flat.numel() - 1, min(SAMPLE, flat.numel()), device=flat.device).long()
    return flat[index].float().cpu()


class SelectionCache:
    """First in, first out, at most ``capacity`` selections waiting for their feature call."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: deque[_Entry] = deque()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, pixels: torch.Tensor, key: tuple, select: Selector) -> tuple[torch.Tensor, torch.Tensor]:
        """Select one video now (the positions call, before vLLM encodes anything) and keep the result for its
        feature call."""
        with torch.inference_mode():
            features, source = select(pixels, key)
        self.put(pixels, key, features, source)
        return features, source

    def selection(self, pixels: torch.Tensor, key: tuple, select: Selector) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature call's selection of one video: the remembered one, else ``select`` runs again (same result)."""
        taken = self.take(pixels, key)
        return taken if taken is not None else select(pixels, key)

    def put(self, pixels: torch.Tensor, key: tuple, features: torch.Tensor, source: torch.Tensor) -> None:
        """Keep one video's selection (its kept features and their indices), made from ``pixels``."""
        self._entries.append(_Entry(key, _sample(pixels), pixels, features, source))
        while len(self._entries) > self.capacity:
            self._entries.popleft()

    def take(self, pixels: torch.Tensor, key: tuple) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The selection made from exactly these pixels under ``key`` (removed from the cache), or None."""
        sample = None
        for entry in self._entries:
            if entry.key != key or entry.pixels.shape != pixels.shape:
                continue
            sample = _sample(pixels) if sample is None else sample
            if torch.equal(entry.sample, sample) and torch.equal(entry.pixels.to(pixels), pixels):
                self._entries.remove(entry)
                self.hits += 1
                return entry.features, entry.source
        self.misses += 1
        return None
