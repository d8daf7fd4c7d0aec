"""Markdown pieces every synthetic-benchmark results table shares, so the tables read alike."""
from __future__ import annotations

from typing import Any

from .vocab import CHANCE, QUESTION_TYPES


def chance_line() -> str:
    """The per-type chance accuracy, printed above each table so a reader can tell a method below random."""
    return "Chance: " + ", ".join(f"{t} {CHANCE[t]:.2f}" for t in QUESTION_TYPES) + "."


def accuracy_evidence_cells(result: dict[str, Any]) -> list[str]:
    """One cell per question type: accuracy, then the share of its evidence kept in brackets."""
    nan = float("nan")
    return [f"{result['by_type'].get(t, nan):.2f} ({result['evidence_kept'].get(t, nan):.2f})" for t in QUESTION_TYPES]
