"""Library users get the CLI's errors: budgets, specs, knob types, data set and training arguments."""
from __future__ import annotations

from pathlib import Path

import pytest

import vtc
from vtc import Budget, Pipeline
from vtc.methods.dtd import DTD
from vtc.spec import parse_spec
from vtc.synth import make_dataset
from vtc.synth.evaluate import prepare
from vtc.trained.config import TrainConfig

from .builders import tiny

ADAPTER = Path(__file__).resolve().parents[1] / "eval" / "results" / "adapters" / "scorer" / "retain-0.1"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retain": True}, "retain must be a number"),
    ({"retain": "0.5"}, "retain must be a number"),
    ({"tokens": 2.5}, "tokens must be an integer count, got 2.5"),
    ({"tokens": True}, "tokens must be an integer count, got True"),
])
def test_budget_refuses_bools_and_fractional_counts(kwargs, message) -> None:
    with pytest.raises(TypeError, match=message):
        Budget(**kwargs)


@pytest.mark.parametrize("spec", ["dtd:0.5>>fastv", "dtd:0.5>", ">dtd", "dtd> >fastv"])
def test_a_spec_with_an_empty_step_is_refused(spec) -> None:
    with pytest.raises(ValueError, match="empty step"):
        parse_spec(spec)


@pytest.mark.parametrize(("spec", "message"), [
    ("dtd(threshold=abc)", "dtd knob 'threshold' expects float or None, got 'abc' (str)"),
    ("dtd(absolute=1)", "dtd knob 'absolute' expects bool, got 1 (int)"),
    ("fastv(layer=2.5)", "fastv knob 'layer' expects int, got 2.5 (float)"),
    ("dtd(mode=1)", "dtd knob 'mode' expects str, got 1 (int)"),
    ("dtd(size=2)", "dtd has no knob 'size'; its knobs: threshold, absolute, mode"),
    ("dtd(mode=a,mode=b)", "given twice"),
    ("fastv@2(layer=3)", "cannot parse"),
])
def test_spec_knobs_are_checked_by_name_and_type(spec, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Pipeline.parse(spec)


def test_methods_check_knob_types_when_built_in_python() -> None:
    with pytest.raises(TypeError, match="'threshold' expects float or None"):
        DTD(threshold="abc")
    with pytest.raises(TypeError, match="'absolute' expects bool"):
        DTD(None, 1)
    assert DTD(threshold=1).threshold == 1  # an int is a fine float


@pytest.mark.parametrize("spec", [f"trained:{ADAPTER}>fastv@2:0.5", f"dtd>trained:{ADAPTER}"])
def test_a_trained_compressor_composed_with_other_steps_is_refused(spec) -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="composes a trained compressor with other steps"):
        vtc.wrap(tm.model, spec)
    assert not vtc.is_wrapped(tm.model)


def test_wrap_refuses_a_bad_budget_or_knob_before_hooking() -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(TypeError, match="retain must be a number"):
        vtc.wrap(tm.model, "dtd", retain=True)
    with pytest.raises(TypeError, match="'threshold' expects float or None"):
        vtc.wrap(tm.model, "dtd", threshold="abc")
    assert not vtc.is_wrapped(tm.model)


def test_make_dataset_checks_count_and_refuses_to_overwrite(tmp_path) -> None:
    with pytest.raises(ValueError, match="count must be an integer >= 1, got -3"):
        make_dataset(tmp_path / "none", seed=1, count=-3, progress=False)
    assert not (tmp_path / "none").exists()
    out = make_dataset(tmp_path / "ds", seed=1, count=1, progress=False)
    with pytest.raises(ValueError, match="already holds a dataset"):
        make_dataset(out, seed=2, count=1, progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": -2}, "batch_size must be an integer >= 1, got -2"),
    ({"limit": -1}, "limit must be an integer >= 1, got -1"),
])
def test_evaluation_refuses_batch_sizes_and_limits_that_drop_items(kwargs, message, tmp_path) -> None:
    with pytest.raises(ValueError, match=message):
        prepare(tmp_path, processor=None, progress=False, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"retain": True}, "retain must be a number"),
    ({"method": "lstm"}, "unknown trained compressor 'lstm'"),
])
def test_train_config_refuses_runs_that_cannot_train(kwargs, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**kwargs)
