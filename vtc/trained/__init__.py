"""Trained compressors (learned scorer, query resampler, VQ codebook) and their PEFT LoRA glue.

``vtc train`` fits one with a LoRA adapter on the LLM; ``vtc.wrap(model, "trained:DIR")`` loads both.
Names load on first use so that ``vtc.trained.cli`` (the ``vtc train`` parser) imports without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

_EXPORTS: dict[str, str] = {
    "TrainedCompressor": "base", "QueryResampler": "resampler", "LearnedScorer": "scorer", "VQCodebook": "vq",
    "KINDS": "store", "attach": "store", "build": "store", "load_compressor": "store",
}

__getattr__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .base import TrainedCompressor
    from .resampler import QueryResampler
    from .scorer import LearnedScorer
    from .store import KINDS, attach, build, load_compressor
    from .vq import VQCodebook


__all__ = sorted(_EXPORTS)
