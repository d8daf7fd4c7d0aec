"""Running one pipeline step on every language-model row (shared by the prefill and layer stages)."""
from __future__ import annotations

import time

import torch

from ..budget import Budget
from ..pipeline import Step
from ..stats import CompressionStats, StageRecord
from ..tokens import VisualTokens


def run_step(
    step: Step, tokens: list[VisualTokens], stats: CompressionStats, default: Budget, layer: int | None, copies: int,
    entered: list[int] | None = None,
) -> tuple[list[VisualTokens], bool, list[torch.Tensor]]:
    """Run one method on every row and record it in ``stats``; each group of ``copies`` rows (one sample)
    gets its first row's selection, so generate()'s copies of a sample keep exactly what the sample alone keeps.
    ``entered``: per row, the visual tokens that entered the language model (for methods whose budget is
    a share of that number, ``Method.entry_budget``).

    Returns the kept tokens, whether any features were replaced (merged), and per row where each
    input row went (its kept row or its representative's; -1 if dropped)."""
    step_budget = step.method.resolve_budget(step.budget or default)
    start = clock(tokens)
    out, merged, notes, moves = [], False, [], []
    for first in range(0, len(tokens), copies):
        group = tokens[first : first + copies]
        if len(group[0]) == 0:
            out += group
            moves += [torch.zeros(0, dtype=torch.long, device=tok.features.device) for tok in group]
            continue
        budget = (step.method.entry_budget(entered[first]) if entered else None) or step_budget
        selection = step.method.compress(group[0], budget)
        merged |= selection.features is not None
        notes += [f"sample {row}: {note}" for row in range(first, first + copies) for note in selection.notes]
        out += [tok.subset(selection.keep, selection.features, selection.carry) for tok in group]
        moves += [selection.positions(len(group[0]))] * copies
    stats.stages.append(
        StageRecord(
            method=step.method.name, stage=step.method.stage, layer=layer,
            tokens_before=[len(t) for t in tokens], tokens_after=[len(t) for t in out],
            ms=(clock(tokens) - start) * 1000.0, notes=notes,
        )
    )
    return out, merged, moves


def clock(tokens: list[VisualTokens]) -> float:
    """Wall time, synchronising CUDA first so per-stage milliseconds are real on GPU."""
    return device_clock(next((t.features.device for t in tokens if len(t)), None))


def device_clock(device: torch.device | None) -> float:
    """Wall time after the work queued on ``device`` (CUDA) has finished."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
