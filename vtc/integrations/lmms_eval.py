"""lmms-eval plugin: the ``lmms_eval.models`` entry point that makes ``--model vtc`` (and friends) exist.

lmms-eval reads this entry point while its own model registry is being built, so this module stays
light: it names the classes by import path and lmms-eval imports them only when one is asked for
(``vtc.integrations.lmms_models``). ``@register_model`` alone would not do: the evaluator resolves
model names through the manifest registry.

    lmms-eval --model vtc --model_args method=dtd,retain=0.25,num_frames=16 --tasks vtc_synth --include_path eval/tasks
"""
from __future__ import annotations

import inspect
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


def model_arg_names(model_id: str) -> set[str]:
    """The ``model_args`` a vtc model accepts: its constructor's keywords and, while a constructor
    forwards ``**kwargs``, its parent's (lmms-eval's Qwen wrappers). Lets ``vtc bench`` report a typo
    before anything loads; ``batch_size`` is left out because the suite sets it."""
    from importlib import import_module

    from lmms_eval.api.model import lmms

    simple, chat = MODEL_CLASSES[model_id]
    cls = getattr(import_module(MODELS_MODULE), simple or chat)
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is lmms:
            break
        if "__init__" not in klass.__dict__:
            continue
        params = list(inspect.signature(klass.__dict__["__init__"]).parameters.values())[1:]
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"batch_size"}
