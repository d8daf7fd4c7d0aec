"""Answer vocabulary, question types and chance levels shared by generator and oracle."""

from __future__ import annotations

# Saturated colours whose hues are >= 25 degrees apart, so they survive h264 / yuv420
# chroma subsampling and stay separable from the low-saturation backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 130, 0),
    "yellow": (250, 225, 0),
    "green": (20, 190, 40),
    "cyan": (0, 200, 225),
    "blue": (30, 70, 235),
    "magenta": (220, 30, 220),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
COUNTS: tuple[str, ...] = ("1", "2", "3", "4")
LETTERS: str = "ABCD"

QUESTION_TYPES: tuple[str, ...] = ("detail", "needle", "motion", "order", "count", "scene")

# Number of options per question type; the answer letter is uniform over these.
NUM_OPTIONS: dict[str, int] = {
    "detail": 4,
    "needle": 4,
    "motion": 4,
    "order": 2,
    "count": 4,
    "scene": 4,
}

# Accuracy of a model that does not look at the video (answers and values are balanced).
CHANCE: dict[str, float] = {t: 1.0 / n for t, n in NUM_OPTIONS.items()}

# Answer values per type; make_dataset balances answers over these values.
VALUES: dict[str, tuple[str, ...]] = {
    "detail": tuple(COLORS) + SHAPES,
    "needle": tuple(COLORS),
    "motion": DIRECTIONS,
    "order": tuple(COLORS),
    "count": COUNTS,
    "scene": tuple(COLORS),
}
