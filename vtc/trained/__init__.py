"""Trained compressors (learned scorer, query resampler, VQ codebook) and their PEFT LoRA glue.

``vtc train`` fits one with a LoRA adapter on the LLM; ``vtc.wrap(model, "trained:DIR")`` loads both.
Names load on first use so that ``vtc.trained.cli`` (the ``vtc train`` parser) imports without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "TrainedCompressor": "base", "QueryResampler": "resampler", "LearnedScorer": "scorer", "VQCodebook": "vq",
    "KINDS": "store", "attach": "store", "build": "store", "load_compressor": "store",
}

if TYPE_CHECKING:
    from .base import TrainedCompressor
    from .resampler import QueryResampler
    from .scorer import LearnedScorer
    from .store import KINDS, attach, build, load_compressor
    from .vq import VQCodebook


def __getattr__(name: str) -> Any:
    """Import the submodule behind a public name on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module 'vtc.trained' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
