"""Procedural synthetic video-QA benchmark (``vtc.synth``).

Six multiple-choice question types (see ``QUESTION_TYPES`` and ``CHANCE``) whose evidence
sits in different places (small regions, single frames, motion, order, counts, scene cuts),
so accuracy under token compression shows *which* information a method throws away.
"""

from .cli import register_cli
from .dataset import load_dataset, make_dataset, plan_items, render_item
from .oracle import oracle_answer
from .video_io import read_video, write_mp4
from .vocab import CHANCE, COLORS, NUM_OPTIONS, QUESTION_TYPES, SHAPES

__all__ = [
    "CHANCE",
    "COLORS",
    "NUM_OPTIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "load_dataset",
    "make_dataset",
    "oracle_answer",
    "plan_items",
    "read_video",
    "register_cli",
    "render_item",
    "write_mp4",
]
