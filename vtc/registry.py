"""Name -> method class registry, so methods are used by name everywhere (API, CLI, lmms-eval)."""
from __future__ import annotations

import dataclasses
from typing import Callable, TypeVar

from .knobs import checked_init
from .method import Method

_REGISTRY: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make a method available as ``name``; a dataclass method checks its knob types when built."""

    def decorate(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.name = name
        if dataclasses.is_dataclass(cls):
            cls.__init__ = checked_init(cls)
        _REGISTRY[name] = cls
        return cls

    return decorate


def get(name: str) -> type[Method]:
    """The class registered as ``name``; the error lists what exists."""
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}") from None


def list_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_REGISTRY)


def _load_builtin_methods() -> None:
    from . import methods, select  # noqa: F401  (importing registers the built-in methods and selectors)
