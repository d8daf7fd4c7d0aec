"""``wrap`` / ``unwrap`` / ``compressed``: the two-line entry points."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from .budget import Budget, Scope
from .engine import Engine
from .method import Method
from .pipeline import Pipeline, as_pipeline
from .spec import trained_dir

ENGINE_ATTR = "_vtc_engine"


def wrap(
    model: nn.Module,
    method: str | Method | Pipeline,
    *,
    retain: float | None = None,
    tokens: int | None = None,
    scope: Scope = "video",
    **method_kwargs: Any,
) -> nn.Module:
    """Hook ``model`` so every forward/generate compresses its video tokens; returns the same object.

    ``method`` is a registered name (``vtc.list_methods()``), a spec such as ``"dtd:0.5>fastv@2:0.5"``,
    a method instance or a ``Pipeline``; ``"trained:PATH"`` loads a ``vtc train`` adapter (its LoRA
    weights go into the model until ``unwrap``). ``retain``/``tokens``/``scope`` set the budget of every step
    that has none of its own; extra keyword arguments set knobs of a single named method.
    Wrapping an already wrapped model replaces the previous compression.
    """
    budget = Budget(retain, tokens, scope)  # a bad budget fails before any hook or adapter is touched
    unwrap(model)
    adapter = _adapter_for(model)
    remove_adapter, spec = None, method
    path = trained_dir(method) if isinstance(method, str) else None
    if path is not None:
        method, remove_adapter = _attach_trained(model, path, method_kwargs)
    try:
        engine = Engine(model, adapter, as_pipeline(method, **method_kwargs), budget)
    except Exception:
        if remove_adapter is not None:
            remove_adapter()
        raise
    if remove_adapter is not None:
        engine.on_remove(remove_adapter)
        # Removing this engine unloads the LoRA layers, so a scope that removed it must wrap anew.
        engine.rewrap = lambda: wrap(model, spec, retain=retain, tokens=tokens, scope=scope)
    engine.install()
    setattr(model, ENGINE_ATTR, engine)
    return model


def _attach_trained(model: nn.Module, path: Path, method_kwargs: dict[str, Any]):
    """``"trained:PATH"``: the LoRA adapter goes into the model (removed again by ``unwrap``) and the
    compressor saved beside it becomes the method."""
    if method_kwargs:
        raise TypeError("a trained compressor takes no method keyword arguments; its knobs are its saved config")
    from .trained import attach

    return attach(model, path)


def unwrap(model: nn.Module) -> nn.Module:
    """Remove every vtc hook from ``model`` (a no-op on a model that is not wrapped)."""
    engine = getattr(model, ENGINE_ATTR, None)
    if engine is not None:
        engine.remove()
        delattr(model, ENGINE_ATTR)
    if hasattr(model, "vtc_stats"):
        del model.vtc_stats
    return model


def is_wrapped(model: nn.Module) -> bool:
    return getattr(model, ENGINE_ATTR, None) is not None


@contextlib.contextmanager
def compressed(model: nn.Module, method: str | Method | Pipeline, **kwargs: Any) -> Iterator[nn.Module]:
    """``with vtc.compressed(model, "dtd", retain=0.2):`` compress inside the block only.

    A compression that was active before the block is restored after it.
    """
    previous = getattr(model, ENGINE_ATTR, None)
    if previous is not None:
        previous.remove()
        delattr(model, ENGINE_ATTR)
    try:
        yield wrap(model, method, **kwargs)
    finally:
        unwrap(model)
        if previous is not None and getattr(previous, "rewrap", None) is not None:
            previous.rewrap()
        elif previous is not None:
            previous.install()
            setattr(model, ENGINE_ATTR, previous)


def _adapter_for(model: nn.Module):
    from .patches import adapter_for

    return adapter_for(model)
