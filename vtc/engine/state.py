"""What the engine remembers between the hooks of one forward, and across the decode steps that follow it."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..sequence import Compaction
from ..tokens import VisualTokens


@dataclass
class LayerCut:
    layer: int
    composed: Compaction  # relative to the layout that entered the LLM


@dataclass
class Expansion:
    """generate()'s copies of each prompt (beam search, several returned sequences).

    generate() encodes the videos of the caller's batch once, then repeats every row ``factor``
    times (rows b*factor .. b*factor+factor-1 are sample b) before the prefill forward.
    """

    factor: int
    inputs: dict[str, torch.Tensor]  # every tensor generate() expanded, as it was before (input_ids included)

    def matches(self, captured: dict[str, Any]) -> bool:
        """Whether this prefill runs the recorded copies (a generate() that failed between expanding and
        its prefill leaves a record that belongs to no forward)."""
        ids, original = captured["input_ids"], self.inputs.get("input_ids")
        return original is not None and torch.equal(ids, original.to(ids.device).repeat_interleave(self.factor, dim=0))


@dataclass
class ForwardState:
    """One prefill and the decode steps that follow it on the same cache."""

    cache: Any
    orig_len: int
    prefill: Compaction
    rewritten: bool
    n_dropped: torch.Tensor
    mask_2d: torch.Tensor  # padding mask of the layout that entered the LLM
    visual: list[VisualTokens]  # per row, ``index`` = rows in the current layout
    copies: int  # consecutive rows that are generate()'s copies of one sample (1 without expansion)
    entered: list[int] = field(default_factory=list)  # per row, visual tokens that entered the language model
    phase: str = "prefill"
    cuts: list[LayerCut] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    layer_mask_2d: torch.Tensor | None = None
    recorded: dict[int, torch.Tensor] = field(default_factory=dict)
    cache_choices: list[Any] = field(default_factory=list)  # per row, the cache method's latest CacheChoice
    cache_run: Any = None  # the cache stage's layouts and selection version (vtc/engine/cache.py)


def cache_kwarg(module: nn.Module) -> str:
    """The name under which ``module.forward`` takes its KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name is still accepted by
    the models, but a pre-hook sees whichever name the caller used, and the models use the new one).
    """
    parameters = inspect.signature(module.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache a forward or ``generate`` returned, under whichever name this transformers version uses
    (``cache`` from 5.24 on, ``past_key_values`` before)."""
    return output.cache if "cache" in output.keys() else output.past_key_values


def args_kwargs(kwargs: dict) -> tuple[tuple, dict]:
    """What a forward pre-hook returns to replace the call's arguments (vtc passes everything by keyword)."""
    return (), kwargs
