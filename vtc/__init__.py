"""vtc: training-free video token compression for Hugging Face transformers video LLMs."""
from .api import compressed, is_wrapped, unwrap, wrap
from .budget import Budget
from .method import Method, ScoreMethod
from .pipeline import Pipeline, Step
from .processor import VideoProcessor
from .registry import get as get_method
from .registry import list_methods, register
from .stats import CompressionStats
from .tokens import Selection, VisualTokens

__version__ = "0.1.0"


def supported_model_types() -> list[str]:
    from .patches import supported_model_types as _supported

    return _supported()


__all__ = [
    "Budget", "CompressionStats", "Method", "Pipeline", "ScoreMethod", "Selection", "Step", "VideoProcessor", "VisualTokens",
    "compressed", "get_method", "is_wrapped", "list_methods", "register", "supported_model_types", "unwrap", "wrap",
]
