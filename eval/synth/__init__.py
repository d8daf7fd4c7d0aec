"""Procedural synthetic video-QA benchmark (``vtc.synth``).

Six multiple-choice question types (see ``QUESTION_TYPES`` and ``CHANCE``) whose evidence
sits in different places (small regions, single frames, motion, order, counts, scene cuts),
so accuracy under token compression shows *which* information a method throws away.
Names load on first use, so registering the ``vtc synth`` parser imports neither numpy nor PyAV.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

_EXPORTS: dict[str, str] = {
    "register_cli": "cli", "load_dataset": "dataset", "make_dataset": "dataset", "plan_items": "dataset",
    "render_item": "dataset", "oracle_answer": "oracle", "read_video": "video_io", "write_mp4": "video_io",
    "TIERS": "tiers", "Tier": "tiers", "get_tier": "tiers",
    "CHANCE": "vocab", "COLORS": "vocab", "NUM_OPTIONS": "vocab", "QUESTION_TYPES": "vocab", "SHAPES": "vocab",
}

__getattr__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .cli import register_cli
    from .dataset import load_dataset, make_dataset, plan_items, render_item
    from .oracle import oracle_answer
    from .tiers import TIERS, Tier, get_tier
    from .video_io import read_video, write_mp4
    from .vocab import CHANCE, COLORS, NUM_OPTIONS, QUESTION_TYPES, SHAPES


__all__ = sorted(_EXPORTS)
