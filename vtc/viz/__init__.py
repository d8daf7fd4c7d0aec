"""Pictures of which visual tokens a compression method lets into the LLM (``vtc viz``).

Torch-free at import: ``vtc --help`` registers the command without loading torch.
"""
from .cells import TokenCells, token_cells, visible_region
from .draw import SheetLayout, draw, draw_frames, draw_with_layout

__all__ = ["SheetLayout", "TokenCells", "draw", "draw_frames", "draw_with_layout", "token_cells", "visible_region"]
