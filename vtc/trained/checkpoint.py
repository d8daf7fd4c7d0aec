"""Resumable training state in safetensors + JSON (no pickle): LoRA, compressor, AdamW moments, step."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_WEIGHTS = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> dict[str, Any]:
    """Write the optimizer's tensors to safetensors; returns the JSON-able rest (param groups)."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().contiguous().cpu()
               for index, entries in state["state"].items() for key, value in entries.items()
               if isinstance(value, torch.Tensor)}
    save_file(tensors, str(directory / OPTIMIZER_WEIGHTS))
    return {"param_groups": state["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path, saved: dict[str, Any]) -> None:
    tensors = load_file(str(directory / OPTIMIZER_WEIGHTS))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def write_state(directory: Path, record: dict[str, Any]) -> None:
    """The step counter and log, written last so a checkpoint is complete once this file exists."""
    temporary = directory / (TRAINER_STATE + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(directory / TRAINER_STATE)


def read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / TRAINER_STATE
    return json.loads(path.read_text()) if path.is_file() else None
