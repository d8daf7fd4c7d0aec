"""Programmatic answerer that reads only pixels plus the question/options (never the labels).

Scoring 100% on decoded videos shows the labels are right and the evidence survives
compression; scoring chance on blanked videos shows the text alone does not give the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .scenes import small_size
from .vocab import COLORS, LETTERS, SHAPES

_NAMES = list(COLORS)
_HUES = np.array(
    [np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360 for r, g, b in COLORS.values()]
)
FALLBACK = LETTERS[0]  # answer when the pixels hold no usable evidence


def color_labels(frames: np.ndarray) -> np.ndarray:
    """Palette index of every pixel [T, H, W], or -1 for unsaturated (background) pixels."""
    r8, g8, b8 = frames[..., 0], frames[..., 1], frames[..., 2]  # ufuncs beat .max(-1) here
    mx = np.maximum(np.maximum(r8, g8), b8).astype(np.int16)
    mn = np.minimum(np.minimum(r8, g8), b8).astype(np.int16)
    saturated = (mx > 115) & (2 * (mx - mn) > mx)
    labels = np.full(frames.shape[:-1], -1, dtype=np.int8)
    r, g, b = frames[saturated].astype(np.float32).T
    hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    dist = np.abs(hue[:, None] - _HUES)
    labels[saturated] = np.minimum(dist, 360 - dist).argmin(-1)
    return labels


def classify_shape(mask: np.ndarray) -> str | None:
    """Name the shape of one solid blob from how full the corner cells (quarter x quarter of
    its bounding box) are: square full, circle partly, cross empty, triangle only at the
    bottom. Corners, unlike total fill, barely move when yuv420 chroma blur grows the blob."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(float)
    qy, qx = max(1, box.shape[0] // 4), max(1, box.shape[1] // 4)
    top = (box[:qy, :qx].mean() + box[:qy, -qx:].mean()) / 2
    bottom = (box[-qy:, :qx].mean() + box[-qy:, -qx:].mean()) / 2
    if bottom - top > 0.5:
        return "triangle"
    corners = (top + bottom) / 2
    return "square" if corners > 0.85 else "circle" if corners > 0.1 else "cross"


def _named(question: str, vocab: list[str] | tuple[str, ...]) -> str | None:
    """The single vocabulary word the question names (None if zero or several)."""
    hits = [w for w in re.findall(r"[a-z0-9]+", question.lower()) if w in vocab]
    return hits[0] if len(hits) == 1 else None


@dataclass
class _Pixels:
    """Per-frame colour analysis shared by the per-type answerers."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    labels: np.ndarray  # [T, H, W] palette index or -1
    counts: np.ndarray  # [T, C] pixels of each palette colour
    present: np.ndarray  # [T, C] colour covers at least a tenth of a small object

    @classmethod
    def of(cls, frames: np.ndarray) -> _Pixels:
        labels = color_labels(frames)
        counts = np.stack([(labels == c).sum((1, 2)) for c in range(len(_NAMES))], axis=1)
        return cls(frames, labels, counts, counts >= 0.1 * small_size(frames.shape[2]) ** 2)

    def frames_with(self, color: str) -> np.ndarray:
        return np.flatnonzero(self.present[:, _NAMES.index(color)])

    def mask_of(self, color: str) -> np.ndarray:
        """Saturated pixels (any hue, as blurred edges drift in hue) around the object of
        ``color`` in the frame where it is largest; objects are >= 4 px apart."""
        c = _NAMES.index(color)
        t = int(self.counts[:, c].argmax())
        ys, xs = np.nonzero(self.labels[t] == c)
        y0, x0 = max(0, ys.min() - 2), max(0, xs.min() - 2)
        return self.labels[t, y0 : ys.max() + 3, x0 : xs.max() + 3] >= 0


def _detail(px: _Pixels, question: str, options: list[str]) -> str | None:
    """The small object is the colour with the fewest pixels among those seen (objects are static)."""
    seen = [c for c in _NAMES if len(px.frames_with(c))]
    if not seen:
        return None
    small = min(seen, key=lambda c: px.counts[:, _NAMES.index(c)].max())
    return classify_shape(px.mask_of(small)) if "shape" in question else small


def _needle(px: _Pixels, question: str, options: list[str]) -> str | None:
    flashed = [o for o in options if o in _NAMES and 0 < len(px.frames_with(o)) <= 2]
    return flashed[0] if len(flashed) == 1 else None


def _motion(px: _Pixels, question: str, options: list[str]) -> str | None:
    color = _named(question, _NAMES)
    seen = px.frames_with(color) if color else []
    if len(seen) < 2:
        return None
    c = _NAMES.index(color)
    (y0, x0), (y1, x1) = (np.argwhere(px.labels[t] == c).mean(0) for t in (seen[0], seen[-1]))
    dy, dx = y1 - y0, x1 - x0
    if max(abs(dx), abs(dy)) <= 2:
        return None
    return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")


def _order(px: _Pixels, question: str, options: list[str]) -> str | None:
    onsets = {o: int(px.frames_with(o)[0]) for o in options if o in _NAMES and len(px.frames_with(o))}
    return min(onsets, key=onsets.get) if len(onsets) == 2 and len(set(onsets.values())) == 2 else None


def _count(px: _Pixels, question: str, options: list[str]) -> str | None:
    color = _named(question, _NAMES)
    if color is None:
        return None
    on = px.present[:, _NAMES.index(color)].astype(int)
    return str(int(on[0] + (np.diff(on) == 1).sum()))  # number of visible runs


def _scene(px: _Pixels, question: str, options: list[str]) -> str | None:
    diffs = np.abs(np.diff(px.frames.astype(np.float32), axis=0)).mean((1, 2, 3))
    cut = int(diffs.argmax()) + 1
    after = {o: int(px.counts[cut:, _NAMES.index(o)].sum()) for o in options if o in _NAMES}
    best = max(after, key=after.get) if after else None
    return best if best is not None and after[best] > 0 else None


_ANSWERERS: dict[str, Callable[[_Pixels, str, list[str]], str | None]] = {
    "detail": _detail,
    "needle": _needle,
    "motion": _motion,
    "order": _order,
    "count": _count,
    "scene": _scene,
}


def oracle_answer(frames: np.ndarray, item: dict[str, Any]) -> str:
    """Answer letter for ``item`` computed from RGB frames [T, H, W, 3] by pixel analysis,
    using only the item's type, question and options; ``FALLBACK`` when nothing is found."""
    if item["type"] not in _ANSWERERS:
        raise ValueError(f"unknown question type {item['type']!r}")
    options = [opt.split(". ", 1)[1] for opt in item["options"]]
    value = _ANSWERERS[item["type"]](_Pixels.of(frames), item["question"], options)
    return LETTERS[options.index(value)] if value in options else FALLBACK
