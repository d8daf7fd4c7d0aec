"""lmms-eval plugin: the ``lmms_eval.models`` entry point that makes ``--model vtc`` (and friends) exist.

lmms-eval reads this entry point while its own model registry is being built, so this module stays
light: it names the classes by import path and lmms-eval imports them only when one is asked for
(``vtc.integrations.lmms_models``). ``@register_model`` alone would not do: the evaluator resolves
model names through the manifest registry.

    lmms-eval --model vtc --model_args method=dtd,retain=0.25,num_frames=16 --tasks vtc_synth --include_path eval/tasks
"""
from __future__ import annotations

from typing import Any

MODELS_MODULE = "vtc.integrations.lmms_models"
# model id -> (simple class, chat class)
MODEL_CLASSES: dict[str, tuple[str | None, str | None]] = {
    "vtc": ("VtcModel", None),
    "vtc_qwen2_5_vl": (None, "VtcQwen2_5_VL"),
    "vtc_qwen3_vl": (None, "VtcQwen3_VL"),
}


def manifests() -> list[Any]:
    """One ``ModelManifest`` per vtc model id (called by lmms-eval's registry)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id=model_id,
            simple_class_path=f"{MODELS_MODULE}.{simple}" if simple else None,
            chat_class_path=f"{MODELS_MODULE}.{chat}" if chat else None,
        )
        for model_id, (simple, chat) in MODEL_CLASSES.items()
    ]
