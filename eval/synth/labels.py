"""Per-visual-token training labels from the renderer's scene spec (auxiliary loss only).

The renderer knows what it drew in each 28x28 merged-token cell of each temporal pair. Naming that
content through the LLM's own head makes visual tokens readable as answer words (and the detail
object's token as "small", the word its question asks by); the event words
("first", "second", ...) are what causal attention over earlier visual tokens can compute and what
order, scene and count questions need. None of this is an input at inference time.
"""
from __future__ import annotations

import numpy as np

from .model import EVENT_WORDS, SIZE_WORD
from .render import shape_mask
from .scenes import SceneSpec
from .vocab import COUNTS

MIN_PIXELS = 60  # of a sprite inside a 28x28 cell (in either frame of the pair) to label the cell


def token_labels(spec: SceneSpec, qtype: str, num_frames: int, size: int, cell: int = 28) -> list[list[str]]:
    """Words for every merged visual token, t-major then h then w (empty list = no label)."""
    pairs, cells = num_frames // 2, size // cell
    best = np.zeros((pairs, cells, cells))
    words: list[list[str]] = [[] for _ in range(pairs * cells * cells)]
    events = _event_words(spec, qtype)
    for index, sprite in enumerate(spec.sprites):
        mask = shape_mask(sprite.shape, sprite.size)
        coverage = np.zeros((pairs, cells, cells))
        for t, (y, x) in sprite.track.items():
            canvas = np.zeros((size, size))
            canvas[y : y + sprite.size, x : x + sprite.size] = mask
            per_cell = canvas.reshape(cells, cell, cells, cell).sum(axis=(1, 3))
            coverage[t // 2] = np.maximum(coverage[t // 2], per_cell)
        label = [sprite.color, sprite.shape]
        if qtype == "detail" and sprite.evidence:
            label.append(SIZE_WORD)
        # A mover's direction only where it moves between the two frames of the pair, which is what one
        # token sees (on the resting pairs before and after, a token's pixels cannot tell the direction).
        moving = _moving_pairs(sprite) if qtype == "motion" and sprite.evidence else set()
        for p, h, w in zip(*np.nonzero((coverage >= MIN_PIXELS) & (coverage > best))):
            best[p, h, w] = coverage[p, h, w]
            event = events.get((index, int(p)))
            extra = ([_direction(sprite)] if int(p) in moving else []) + ([event] if event else [])
            words[(p * cells + h) * cells + w] = label + extra
    if qtype == "count":
        _count_so_far(spec, words, pairs, cells, best)
    return words


def _count_so_far(spec: SceneSpec, words: list[list[str]], pairs: int, cells: int, best: np.ndarray) -> None:
    """At the blinker's cell, pairs between blinks name the count so far: the token of the last pair
    then holds the total, which causal attention over the same cell's earlier tokens can compute."""
    blinker = next(s for s in spec.sprites if s.evidence)
    on = sorted({t // 2 for t in blinker.track})
    where = np.argwhere(best[on[0]] > 0)
    for p in range(on[0], pairs):
        if p in on:
            continue
        for h, w in where:
            index = (p * cells + int(h)) * cells + int(w)
            if not words[index]:
                words[index] = [COUNTS[sum(q <= p for q in on) - 1]]


def _event_words(spec: SceneSpec, qtype: str) -> dict[tuple[int, int], str]:
    """(sprite index, pair) -> event word, for the types whose answer depends on what came before."""
    events: dict[tuple[int, int], str] = {}
    if qtype in ("order", "scene"):
        order = sorted(range(len(spec.sprites)), key=lambda i: min(spec.sprites[i].track))
        for rank, index in enumerate(order[:2]):
            for t in spec.sprites[index].track:
                events[(index, t // 2)] = EVENT_WORDS[rank]
    elif qtype == "count":
        # The running count as the answer digit: the reply then copies the digit of the latest blink
        # (an ordinal word would still have to be mapped to the number).
        for index, sprite in enumerate(spec.sprites):
            if sprite.evidence:
                for rank, pair in enumerate(sorted({t // 2 for t in sprite.track})):
                    events[(index, pair)] = COUNTS[rank]
    return events


def _moving_pairs(sprite) -> set[int]:
    track = sprite.track
    return {t // 2 for t in track if t % 2 == 0 and t + 1 in track and track[t] != track[t + 1]}


def _direction(sprite) -> str:
    frames = sorted(sprite.track)
    (y0, x0), (y1, x1) = sprite.track[frames[0]], sprite.track[frames[-1]]
    if abs(x1 - x0) >= abs(y1 - y0):
        return "right" if x1 > x0 else "left"
    return "down" if y1 > y0 else "up"
