"""The engine that applies a Pipeline to a wrapped model, one file per job:

- ``hooks``: which hooks go on the model, what they record, and where each language-model call goes;
- ``prefill``: select and prefill steps, then the compacted inputs, positions and padding mask;
- ``decode``: decode steps' masks and positions mapped onto the shorter KV cache;
- ``layers``: cuts inside the language model (layer-stage methods) and their decode masks;
- ``steps``: one method run on every row, recorded in the stats; ``state``: what persists between hooks.
"""
from .hooks import Engine
from .state import cache_kwarg, cache_of

__all__ = ["Engine", "cache_kwarg", "cache_of"]
