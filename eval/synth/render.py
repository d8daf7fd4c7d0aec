"""Pixels: textured static backgrounds, solid shapes, and the evidence boxes of what was drawn."""

from __future__ import annotations

import numpy as np

from .scenes import Background, SceneSpec
from .vocab import COLORS


def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear-interpolation matrix (n_out x n_in), used separably for smooth noise."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def render_background(bg: Background, size: int) -> np.ndarray:
    """Low-saturation texture (smooth blotches plus a faint pattern), so frames look like
    real, mostly redundant footage while saturated objects stay easy to separate."""
    rng = np.random.default_rng(bg.seed)
    up = _upsample_matrix(6, size)
    grey = bg.level + 18.0 * (up @ rng.normal(size=(6, 6)) @ up.T)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    period = float(rng.uniform(10, 24))
    if bg.pattern == "stripes":
        angle = float(rng.uniform(0, np.pi))
        grey += 8.0 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif bg.pattern == "checker":
        grey += 8.0 * (((yy // period) + (xx // period)) % 2 * 2 - 1)
    else:
        grey += rng.normal(0, 4.0, size=(size, size))
    rgb = grey[..., None] * np.asarray(bg.tint)[None, None, :]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean ``side`` x ``side`` mask of a shape filling its box (triangle points up)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(float) + 0.5
    dy, dx = np.abs(yy - side / 2), np.abs(xx - side / 2)
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return dy**2 + dx**2 <= (side / 2) ** 2
    if shape == "triangle":
        return dx <= (yy + 0.5) / 2
    if shape == "cross":
        return (dx <= side / 6) | (dy <= side / 6)
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(spec: SceneSpec, num_frames: int, size: int) -> tuple[np.ndarray, list[list[int]]]:
    """Draw a spec; returns uint8 frames [T, H, W, 3] and evidence boxes
    [frame, y0, x0, y1, x1] (half-open) of every evidence sprite in every frame it is drawn."""
    starts = [s for s, _ in spec.backgrounds]
    backgrounds = [render_background(bg, size) for _, bg in spec.backgrounds]
    frames = np.stack([backgrounds[int(np.searchsorted(starts, t, side="right")) - 1] for t in range(num_frames)])
    evidence: list[list[int]] = []
    for sprite in spec.sprites:
        mask = shape_mask(sprite.shape, sprite.size)
        color = np.asarray(COLORS[sprite.color], dtype=np.uint8)
        for t, (y, x) in sorted(sprite.track.items()):
            frames[t, y : y + sprite.size, x : x + sprite.size][mask] = color
            if sprite.evidence:
                evidence.append([t, y, x, y + sprite.size, x + sprite.size])
    evidence.sort()
    return frames, evidence
