"""Lazy package exports: a package names its public objects, and each is imported on first access.

This keeps torch (and numpy, PyAV) out of ``vtc --help``, ``vtc --version`` and ``vtc list``, which
import the packages only to register their parsers.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each public name to the submodule that
    defines it (``"get_method": "registry:get"`` when the attribute is spelled differently there)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attribute or name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    return __getattr__
