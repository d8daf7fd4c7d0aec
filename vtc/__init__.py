"""vtc: training-free video token compression for Hugging Face transformers video LLMs.

The API names load on first use (module ``__getattr__``), so ``vtc --help``, ``vtc --version`` and
``vtc list`` start without importing torch or transformers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import exports

__version__ = "0.1.0"

# public name -> the submodule that defines it ("registry:get": spelled differently there)
_EXPORTS: dict[str, str] = {
    "compressed": "api", "is_wrapped": "api", "unwrap": "api", "wrap": "api", "Budget": "budget",
    "Method": "method", "ScoreMethod": "method", "Pipeline": "pipeline", "Step": "pipeline",
    "VideoProcessor": "processor", "get_method": "registry:get", "list_methods": "registry", "register": "registry",
    "CompressionStats": "stats", "Selection": "tokens", "VisualTokens": "tokens",
}
__getattr__ = exports(__name__, _EXPORTS)

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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def supported_model_types() -> list[str]:
    from .patches import supported_model_types as _supported

    return _supported()


__all__ = sorted([*_EXPORTS, "supported_model_types"])
