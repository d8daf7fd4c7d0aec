"""Tiny random-initialised models of each supported family, one builder module per adapter in ``patches/``.

Every module in this folder is imported here, so a family's builder registers itself
(``@register("<model_type>")``): adding a family to the test suites is one new module.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import BUILDERS, Tiny

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BUILDERS", "Tiny"]
