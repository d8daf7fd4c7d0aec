"""Access to the reference vectors of official implementations in ../shared/vectors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

VECTORS = Path(os.environ.get("VTC_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))


def cases(method_key: str) -> list[str]:
    """Case names for one method; an empty list (and a skip reason) when the vectors are absent."""
    folder = VECTORS / method_key
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load(method_key: str, case: str) -> tuple[dict, dict]:
    meta = json.loads((VECTORS / method_key / f"{case}.json").read_text())
    tensors = load_file(str(VECTORS / method_key / f"{case}.safetensors"))
    return meta, tensors


def parametrize_cases(method_key: str):
    found = cases(method_key)
    if not found:
        return pytest.mark.skip(reason=f"reference vectors not found under {VECTORS / method_key} (set VTC_VECTORS)")
    return pytest.mark.parametrize("case", found)
