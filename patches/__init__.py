"""Family adapters, looked up by ``config.model_type``. Algorithms live in ``vtc``; surgery lives here."""
from __future__ import annotations

from typing import Any

from torch import nn

from .base import FamilyAdapter, VisualLayout
from .internvl import InternVLAdapter
from .llava_next_video import LlavaNextVideoAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .processor_policy import ProcessorPolicy
from .qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from .smolvlm import SmolVLMAdapter
from .video_llama_3 import VideoLlama3Adapter
from .video_llava import VideoLlavaAdapter

ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    QwenVLAdapter, Qwen3VLAdapter, LlavaOnevisionAdapter, LlavaNextVideoAdapter, VideoLlavaAdapter,
)
ADAPTERS += (InternVLAdapter, SmolVLMAdapter, VideoLlama3Adapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter for ``model``; an unsupported model gets an error naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(model)
    raise ValueError(
        f"vtc does not support model_type {model_type!r} ({type(model).__name__}); "
        f"supported: {', '.join(supported_model_types())}"
    )


def processor_policy_for(processor: Any, model: Any = None) -> ProcessorPolicy:
    """The policy an adapter names for this Hugging Face processor's class, else the default (the processor
    fixes each frame's token count itself)."""
    for adapter in ADAPTERS:
        for policy in adapter.processor_policies:
            if policy.handles(processor):
                return policy(processor, model)
    return ProcessorPolicy(processor, model)


__all__ = [
    "ADAPTERS", "FamilyAdapter", "ProcessorPolicy", "VisualLayout", "adapter_for", "processor_policy_for",
    "supported_model_types",
]
