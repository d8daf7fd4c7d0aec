"""Scene specifications: for each question type, what is drawn where and when, and the question.

Builders only decide content (objects, tracks, backgrounds, question, options); pixels are
drawn by ``render.py``. Events are aligned to temporal pairs (frames 2p, 2p+1) because
Qwen2-VL-style models merge two consecutive frames into one temporal patch: an event that
straddled a pair boundary could blend with its neighbour and become ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .vocab import COLORS, COUNTS, DIRECTIONS, NUM_OPTIONS, SHAPES

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (half-open pixel box)


@dataclass(frozen=True)
class Background:
    """Static low-saturation texture; seed fixes the noise so a background is reproducible."""

    level: float  # mean grey level, 0..255
    tint: tuple[float, float, float]  # per-channel multipliers close to 1 (low saturation)
    pattern: str  # "noise", "stripes" or "checker"
    seed: int


@dataclass
class Sprite:
    """A solid-coloured shape; ``track`` maps frame index -> top-left (y, x) where it is visible."""

    shape: str
    color: str
    size: int
    track: dict[int, tuple[int, int]]
    evidence: bool = False  # whether these pixels hold the information the question needs


@dataclass
class SceneSpec:
    """Everything needed to render one item and state its question."""

    question: str
    option_values: list[str]
    answer_index: int
    backgrounds: list[tuple[int, Background]]  # (first frame, background) sorted by frame
    sprites: list[Sprite] = field(default_factory=list)


Builder = Callable[[np.random.Generator, int, int, int, str], SceneSpec]

_PATTERNS = ("noise", "stripes", "checker")
_MARGIN = 2  # keep objects this many pixels away from the frame border
_GAP = 4  # minimum empty pixels between objects that are visible at the same time
_DETAIL_ATTEMPTS = 100  # the cell leaves room for both large objects; this only bounds bad luck
MIN_SIZE = 68  # smallest even frame side a motion clip's path fits in (build_motion)
MOTION_FRAMES = 11  # frames during which a motion question's object moves


def small_size(size: int) -> int:
    """Side of 'detail' objects: smaller than one merged visual token (24 px at 112 px, under a
    28 px cell) yet large enough that a ~2M-parameter ViT tells the four shapes apart (at 18 px
    the reference model's shape readout stayed at chance). Even, like every position, so object
    edges fall on the 2x2 chroma grid."""
    return max(16, 2 * round(0.11 * size))


def big_size(size: int) -> int:
    """Side of objects in the temporal question types (22 px at 112 px): large so only
    timing matters."""
    return max(16, 2 * round(0.1 * size))


def _background(rng: np.random.Generator, avoid: Background | None = None) -> Background:
    """Draw a background; with ``avoid``, make it clearly different (for scene cuts)."""
    if avoid is None:
        level = float(rng.uniform(70, 170))
        pattern = str(rng.choice(_PATTERNS))
    else:
        low = [lv for lv in np.arange(70.0, 171.0, 5.0) if abs(lv - avoid.level) >= 50]
        level = float(rng.choice(low))
        pattern = str(rng.choice([p for p in _PATTERNS if p != avoid.pattern]))
    tint = tuple(float(v) for v in 1.0 + rng.uniform(-0.1, 0.1, size=3))
    return Background(level, tint, pattern, int(rng.integers(2**31)))


def _arrange(
    rng: np.random.Generator,
    answer: str,
    pool: tuple[str, ...] | list[str],
    n: int,
    letter_index: int,
    forced: tuple[str, ...] = (),
) -> list[str]:
    """Options with ``answer`` at ``letter_index``; distractors are uniform over the rest of
    ``pool`` (plus ``forced`` ones), so the option set does not reveal the answer."""
    rest = [v for v in pool if v != answer and v not in forced]
    picked = list(forced) + list(rng.choice(rest, size=n - 1 - len(forced), replace=False))
    picked = [str(v) for v in rng.permutation(picked)]
    return picked[:letter_index] + [answer] + picked[letter_index:]


def _overlaps(a: Box, b: Box, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _place(rng: np.random.Generator, size: int, side: int, taken: list[Box]) -> tuple[int, int]:
    """Random even top-left for a ``side`` x ``side`` object not touching any box in ``taken``."""
    hi = size - _MARGIN - side
    for _ in range(10_000):
        y, x = (2 * int(v) for v in rng.integers(_MARGIN // 2, hi // 2 + 1, size=2))
        box = (y, x, y + side, x + side)
        if not any(_overlaps(box, t, _GAP) for t in taken):
            taken.append(box)
            return y, x
    raise RuntimeError("could not place object; frame too small for the scene")


def _cell_place(
    rng: np.random.Generator, size: int, side: int, token: int = 28, room_for: tuple[int, int] | None = None,
) -> tuple[tuple[int, int], Box]:
    """Top-left of an object centred in a random cell of the merged-token grid (``token`` px, patch 14 x
    merge 2), and that whole cell, which other objects must stay out of: at 112 px the object is then
    seen whole by one visual token instead of being cut into fragments across up to four, which a
    ~2M-parameter ViT could not read a shape from. Objects scale with the frame, so at larger sizes a
    cell is the smallest square of whole tokens that holds the object. With ``room_for=(n, side)`` only
    cells beside which ``n`` (at most 2) objects of that side still fit are drawn (a central cell of a
    160 px frame leaves no room for two 52 px objects, and placing them retried forever)."""
    cell = token * -(-side // token)
    per_side = size // cell
    offset = 2 * ((cell - side) // 4)
    corners = [(k // per_side * cell, k % per_side * cell) for k in range(per_side * per_side)]
    cells = [(y0, x0, y0 + cell, x0 + cell) for y0, x0 in corners]
    if room_for is not None:
        cells = [c for c in cells if _fits_beside(size, c, *room_for)]
        if not cells:
            raise ValueError(f"a {size} px frame has no {cell} px cell with room for {room_for[0]} objects of "
                             f"{room_for[1]} px beside it; use a larger --size")
    box = cells[int(rng.choice(len(cells), size=1, replace=False)[0])]
    return (box[0] + offset, box[1] + offset), box


def _fits_beside(size: int, taken: Box, count: int, side: int) -> bool:
    """Whether ``count`` (1 or 2) ``side`` px objects fit in the frame without touching ``taken``
    (the positions ``_place`` draws from). Two fit iff the free positions span at least side + gap
    along one axis, since two boxes are apart exactly when one axis separates them."""
    if count not in (1, 2):
        raise ValueError("_fits_beside checks one or two objects")
    starts = np.arange(_MARGIN, size - _MARGIN - side + 1, 2)
    y, x = np.meshgrid(starts, starts, indexing="ij")
    apart = ((y + side + _GAP <= taken[0]) | (taken[2] + _GAP <= y)
             | (x + side + _GAP <= taken[1]) | (taken[3] + _GAP <= x))  # _overlaps, negated, on every position
    ys, xs = y[apart], x[apart]
    if count == 1 or ys.size == 0:
        return bool(ys.size)
    return bool(max(ys.max() - ys.min(), xs.max() - xs.min()) >= side + _GAP)


def _static(pos: tuple[int, int], frames: range) -> dict[int, tuple[int, int]]:
    """Track of an object that stays at ``pos`` during ``frames``."""
    return {t: pos for t in frames}


def large_size(size: int) -> int:
    """Side of the two large distractors in 'detail' clips (36 px at 112 px): clearly bigger than
    the small object, so "the small object" names exactly one thing in the frame."""
    return max(24, 2 * round(0.16 * size))


def build_detail(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """One small static object, centred in its own merged-token cell, beside two large distractors
    of other colours and shapes; ask the small object's colour or shape. The options include the
    distractors' colours (or shapes), so reading any object other than the small one is wrong.

    Earlier recipes asked "What colour is the <shape>?" among three small objects: a question-dependent
    two-hop lookup that the ~2M-parameter reference model never learned (detail stayed at 0.40-0.53
    held-out while every token's colour and shape were decodable). "The small object" keys the lookup
    on size, which the question does not change, like "first" for order questions."""
    side, large = small_size(size), large_size(size)
    colors = [value] if value in COLORS else []
    colors += [str(c) for c in rng.permutation([c for c in COLORS if c not in colors])][: 3 - len(colors)]
    shapes = [] if value in COLORS else [value]
    shapes += [str(s) for s in rng.permutation([s for s in SHAPES if s not in shapes])][: 3 - len(shapes)]
    (y, x), cell = _cell_place(rng, size, side, room_for=(2, large))
    for _ in range(_DETAIL_ATTEMPTS):  # a first large object can leave no room for the second: place both again
        taken = [cell]
        try:
            places = [_place(rng, size, large, taken) for _ in range(2)]
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError(f"could not place the two large objects of a detail clip in {_DETAIL_ATTEMPTS} attempts")
    frames = range(num_frames)
    sprites = [Sprite(shapes[0], colors[0], side, _static((y, x), frames), True)]
    sprites += [Sprite(shapes[i], colors[i], large, _static(places[i - 1], frames)) for i in (1, 2)]
    if value in COLORS:
        question = "What colour is the small object?"
        options = _arrange(rng, value, tuple(COLORS), NUM_OPTIONS["detail"], letter, forced=tuple(colors[1:]))
    else:
        question = "What shape is the small object?"
        options = _arrange(rng, value, SHAPES, NUM_OPTIONS["detail"], letter, forced=tuple(shapes[1:]))
    return SceneSpec(question, options, letter, [(0, _background(rng))], sprites)


def build_needle(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """An object of a colour used nowhere else flashes for 1-2 frames inside one temporal pair."""
    side = big_size(size)
    options = _arrange(rng, value, tuple(COLORS), NUM_OPTIONS["needle"], letter)
    unused = [c for c in COLORS if c not in options]
    taken: list[Box] = []
    sprites = [
        Sprite(str(rng.choice(SHAPES)), str(c), side, _static(_place(rng, size, side, taken), range(num_frames)))
        for c in rng.choice(unused, size=2, replace=False)
    ]
    pair = int(rng.integers(1, num_frames // 2 - 1))
    frames = [2 * pair, 2 * pair + 1] if rng.random() < 0.5 else [2 * pair + int(rng.integers(2))]
    pos = _place(rng, size, side, taken)
    sprites.append(Sprite(str(rng.choice(SHAPES)), value, side, {t: pos for t in frames}, True))
    question = "An object flashes briefly at one moment in the video. What colour is it?"
    return SceneSpec(question, options, letter, [(0, _background(rng))], sprites)


def build_motion(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """One object moves steadily in direction ``value``; a static distractor sits elsewhere."""
    side = big_size(size)
    # The object moves for MOTION_FRAMES - 1 frame steps of ~8 px (at 112 px) starting on an even frame
    # and rests before and after: every temporal pair it moves in shows an 8 px shift between its two
    # frames, which the temporal patch embedding sees inside one token (at 4.5 px/frame, over all
    # frames, the reference model could not tell left from right).
    moving = min(MOTION_FRAMES, num_frames)
    distance = 2 * round(0.036 * size * (moving - 1))
    first = 2 * int(rng.integers(0, (num_frames - moving) // 2 + 1))
    lo, hi = _MARGIN, size - _MARGIN - side
    if hi - distance < lo:
        raise ValueError(f"a {size} px frame is too small for a {distance} px motion path; use a larger --size")
    along = int(rng.integers(lo, hi - distance + 1))  # smaller end of the path
    across = int(rng.integers(lo, hi + 1))
    start, end = (along + distance, along) if value in ("left", "up") else (along, along + distance)
    path = np.rint(np.linspace(start, end, moving)).astype(int)
    steps = np.concatenate([np.full(first, path[0]), path, np.full(num_frames - first - moving, path[-1])])
    horizontal = value in ("left", "right")
    track = {t: ((across, int(s)) if horizontal else (int(s), across)) for t, s in enumerate(steps)}
    ys = [p[0] for p in track.values()]
    xs = [p[1] for p in track.values()]
    taken: list[Box] = [(min(ys), min(xs), max(ys) + side, max(xs) + side)]  # swept area
    color, other = (str(c) for c in rng.choice(list(COLORS), size=2, replace=False))
    shape = str(rng.choice(SHAPES))
    place = _place(rng, size, side, taken)
    distractor = Sprite(str(rng.choice(SHAPES)), other, side, _static(place, range(num_frames)))
    mover = Sprite(shape, color, side, track, True)
    question = f"In which direction does the {color} {shape} move?"
    options = _arrange(rng, value, DIRECTIONS, NUM_OPTIONS["motion"], letter)
    return SceneSpec(question, options, letter, [(0, _background(rng))], [distractor, mover])


def build_order(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """Two objects appear in turn (1-2 temporal pairs each, >= 1 empty pair between)."""
    side = big_size(size)
    pairs = num_frames // 2
    len1, len2 = (int(v) for v in rng.integers(1, 3, size=2))
    slack = pairs - (len1 + 1 + len2)
    start1 = int(rng.integers(0, slack + 1))
    start2 = start1 + len1 + 1 + int(rng.integers(0, slack - start1 + 1))
    second = str(rng.choice([c for c in COLORS if c != value]))
    taken: list[Box] = []
    sprites = []
    for color, start, length in ((value, start1, len1), (second, start2, len2)):
        track = _static(_place(rng, size, side, taken), range(2 * start, 2 * (start + length)))
        sprites.append(Sprite(str(rng.choice(SHAPES)), color, side, track, True))
    options = _arrange(rng, value, [value, second], NUM_OPTIONS["order"], letter)
    question = "Two objects appear one after the other. Which colour appeared first?"
    return SceneSpec(question, options, letter, [(0, _background(rng))], sprites)


def build_count(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """An object blinks ``value`` times, each blink one full temporal pair, blinks never adjacent.
    The blinker sits centred in one merged-token cell, so each blink is exactly one visual token
    (a blinker straddling up to four cells made the number of tokens per blink vary)."""
    side = big_size(size)
    pairs, n = num_frames // 2, int(value)
    while True:
        on = np.sort(rng.choice(pairs, size=n, replace=False))
        if np.all(np.diff(on) >= 2):
            break
    color, other = (str(c) for c in rng.choice(list(COLORS), size=2, replace=False))
    shape = str(rng.choice(SHAPES))
    pos, cell = _cell_place(rng, size, side, room_for=(1, side))
    place = _place(rng, size, side, [cell])
    distractor = Sprite(str(rng.choice(SHAPES)), other, side, _static(place, range(num_frames)))
    blinker = Sprite(shape, color, side, {t: pos for p in on for t in (2 * int(p), 2 * int(p) + 1)}, True)
    question = f"How many times does the {color} {shape} blink?"
    options = _arrange(rng, value, COUNTS, NUM_OPTIONS["count"], letter)
    return SceneSpec(question, options, letter, [(0, _background(rng))], [distractor, blinker])


def build_scene(rng: np.random.Generator, num_frames: int, size: int, letter: int, value: str) -> SceneSpec:
    """A hard cut (new background, new object); ask the colour of the object after the cut.
    The first scene's object colour is always a distractor option."""
    side = big_size(size)
    pairs = num_frames // 2
    cut = 2 * int(rng.integers(-(-pairs // 4), 3 * pairs // 4 + 1))
    first = str(rng.choice([c for c in COLORS if c != value]))
    bg1 = _background(rng)
    bg2 = _background(rng, avoid=bg1)
    before = _static(_place(rng, size, side, []), range(cut))
    after = _static(_place(rng, size, side, []), range(cut, num_frames))
    sprites = [
        Sprite(str(rng.choice(SHAPES)), first, side, before),
        Sprite(str(rng.choice(SHAPES)), value, side, after, True),
    ]
    options = _arrange(rng, value, tuple(COLORS), NUM_OPTIONS["scene"], letter, forced=(first,))
    question = "The video cuts to a different scene. What colour is the object shown after the cut?"
    return SceneSpec(question, options, letter, [(0, bg1), (cut, bg2)], sprites)


BUILDERS: dict[str, Builder] = {
    "detail": build_detail,
    "needle": build_needle,
    "motion": build_motion,
    "order": build_order,
    "count": build_count,
    "scene": build_scene,
}
