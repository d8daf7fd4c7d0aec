"""vtc inside vLLM: exact-budget prefill methods for vLLM's Qwen2.5-VL and Qwen3-VL, as a ``vllm.general_plugins`` plugin.

``register`` (the entry point) points vLLM's ``Qwen2_5_VLForConditionalGeneration`` and
``Qwen3VLForConditionalGeneration`` architectures at vtc's subclasses, which behave exactly like vLLM's own
unless the model's config has a ``vtc`` entry:

    LLM(model=path, hf_overrides={"vtc": {"method": "vidcom2", "retain": 0.25}})

See README "Serving with vLLM" for what runs, what is refused and why the entry goes in ``hf_overrides``.
"""
from __future__ import annotations

ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "vtc.integrations.vllm.qwen2_5_vl:VtcQwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "vtc.integrations.vllm.qwen3_vl:VtcQwen3VLForConditionalGeneration",
}


def register() -> None:
    """Called by vLLM in every process it starts; registers vtc's model classes by import path (lazily)."""
    from vllm import ModelRegistry

    for architecture, target in ARCHITECTURES.items():
        ModelRegistry.register_model(architecture, target)
