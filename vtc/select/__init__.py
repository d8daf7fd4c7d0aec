"""Frame and key-clip selection before the vision encoder (stage "select"); importing registers the selectors."""
from . import fps, keyclips, keyframes, query, scenes, uniform  # noqa: F401
from .base import Frames, Plan, Selector, UnitCost

__all__ = ["Frames", "Plan", "Selector", "UnitCost"]
