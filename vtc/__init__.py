"""vtc: training-free video token compression for Hugging Face transformers video LLMs.

The API names load on first use (module ``__getattr__``), so ``vtc --help``, ``vtc --version`` and
``vtc list`` start without importing torch or transformers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (submodule, attribute in it)
_LAZY: dict[str, tuple[str, str]] = {
    "compressed": ("api", "compressed"), "is_wrapped": ("api", "is_wrapped"), "unwrap": ("api", "unwrap"),
    "wrap": ("api", "wrap"), "Budget": ("budget", "Budget"), "Method": ("method", "Method"),
    "ScoreMethod": ("method", "ScoreMethod"), "Pipeline": ("pipeline", "Pipeline"), "Step": ("pipeline", "Step"),
    "VideoProcessor": ("processor", "VideoProcessor"), "get_method": ("registry", "get"),
    "list_methods": ("registry", "list_methods"), "register": ("registry", "register"),
    "CompressionStats": ("stats", "CompressionStats"), "Selection": ("tokens", "Selection"),
    "VisualTokens": ("tokens", "VisualTokens"),
}

if TYPE_CHECKING:
    from .api import compressed, is_wrapped, unwrap, wrap
    from .budget import Budget
    from .method import Method, ScoreMethod
    from .pipeline import Pipeline, Step
    from .processor import VideoProcessor
    from .registry import get as get_method
    from .registry import list_methods, register
    from .stats import CompressionStats
    from .tokens import Selection, VisualTokens


def __getattr__(name: str) -> Any:
    """Import the submodule behind a public name on first access, then cache the name here."""
    if name not in _LAZY:
        raise AttributeError(f"module 'vtc' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def supported_model_types() -> list[str]:
    from .patches import supported_model_types as _supported

    return _supported()


__all__ = sorted([*_LAZY, "supported_model_types"])
