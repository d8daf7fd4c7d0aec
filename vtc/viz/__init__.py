"""Pictures of which visual tokens a compression method lets into the LLM (``vtc viz``).

Names load on first use, so ``vtc --help`` registers the command (``vtc.viz.cli``) without numpy or torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

_EXPORTS: dict[str, str] = {
    "TokenCells": "cells", "token_cells": "cells", "visible_region": "cells",
    "SheetLayout": "draw", "draw": "draw", "draw_frames": "draw", "draw_with_layout": "draw",
}

__getattr__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .cells import TokenCells, token_cells, visible_region
    from .draw import SheetLayout, draw, draw_frames, draw_with_layout

__all__ = sorted(_EXPORTS)
