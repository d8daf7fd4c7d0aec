"""The adapters behind eval/results/trained.md load onto the shipped reference model, meet their budget
exactly and stay accurate on a split none of them was trained or selected on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vtc
from vtc.runner import default_model_path, load_model
from vtc.synth import make_dataset
from vtc.synth.evaluate import evaluate

ADAPTERS = sorted(p.parent for p in (Path(__file__).parents[1] / "eval/results/adapters").glob("*/*/vtc_compressor.json"))
SPLIT_SEED, SPLIT_ITEMS = 4242, 60  # as tests/test_reference_model.py, fewer items: six adapters to run
MARGIN = 0.1  # 60 items here vs the 240 (480 for the scorers) evaluated after training; two standard errors at 0.75 are 0.11


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("heldout"), seed=SPLIT_SEED, count=SPLIT_ITEMS, progress=False)


def test_every_trained_method_and_budget_has_a_committed_adapter() -> None:
    found = {(p.parent.name, p.name) for p in ADAPTERS}
    for method in ("scorer", "resampler", "vq"):
        for retain in ("0.1", "0.05"):
            assert (method, f"retain-{retain}") in found, sorted(found)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_adapter_loads_meets_its_budget_and_answers(adapter: Path, split: Path) -> None:
    record = json.loads((adapter / "vtc_compressor.json").read_text())
    committed = record["summary"]["held_out"]["overall"]
    torch.manual_seed(0)
    model, processor = load_model(default_model_path(), device="cpu")
    vtc.wrap(model, f"trained:{adapter}")
    result = evaluate(split, model, processor, progress=False)
    assert result["tokens_in"] == 128
    assert result["tokens_kept"] == {0.1: 13, 0.05: 7}[record["training"]["retain"]]  # ceil(retain x 128), every item
    assert result["overall"] >= committed - MARGIN, (committed, result["by_type"])
