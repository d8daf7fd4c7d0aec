"""Ordered methods across stages, and the compact string spec used on the command line."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .budget import Budget
from .knobs import KnobError
from .method import Method
from .registry import get
from .spec import StepSpec, parse_spec, trained_dir

_STAGE_ORDER = {"select": 0, "vision": 1, "prefill": 2, "layer": 3, "cache": 4}


@dataclass
class Step:
    """One method in a pipeline; ``budget`` overrides the pipeline-wide one when set."""

    method: Method
    budget: Budget | None = None


class Pipeline:
    """Methods applied in stage order; within a stage, in the order given.

    A string spec chains steps with ``>``: ``"dtd:0.5>fastv@2:0.5"``. Each step is
    ``name[(knob=value,...)][@layer][:budget]`` where a budget <= 1 is a retain fraction and a
    larger integer an absolute token count. A step's budget is relative to the tokens that step
    receives; steps without one use the budget given to ``vtc.wrap``.
    """

    def __init__(self, *steps: Method | Step) -> None:
        if not steps:
            raise ValueError("a Pipeline needs at least one method")
        self.steps = [s if isinstance(s, Step) else Step(s) for s in steps]
        for step in self.steps:
            if not isinstance(step.method, Method):
                raise TypeError(f"Pipeline steps must be vtc methods, got {type(step.method).__name__}")
        ranks = [_STAGE_ORDER[s.method.stage] for s in self.steps]
        if ranks != sorted(ranks):
            order = " > ".join(f"{s.method.name}[{s.method.stage}]" for s in self.steps)
            raise ValueError(f"pipeline steps must follow stage order select>vision>prefill>layer>cache: {order}")
        layers = [s.method.layer for s in self.steps if s.method.stage == "layer" and hasattr(s.method, "layer")]
        if layers != sorted(layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layer-stage steps must act at strictly increasing layers, got {layers}")

    @classmethod
    def parse(cls, spec: str) -> "Pipeline":
        """Build the pipeline a spec names (grammar: :mod:`vtc.spec`); ``trained:DIR`` goes through ``vtc.wrap``."""
        if trained_dir(spec) is not None:
            raise ValueError(f"{spec!r} is a trained compressor: pass it to vtc.wrap, which also loads its LoRA adapter")
        return cls(*(_build_step(step) for step in parse_spec(spec)))

    def resolve_budgets(self, budget: Budget) -> list[Budget]:
        """The budget each step runs with (its own, else ``budget``); refuses steps that would get none."""
        return [s.method.resolve_budget(s.budget or budget) for s in self.steps]

    def expanded(self, num_layers: int, budget: Budget) -> "Pipeline":
        """Every step replaced by the parts its method runs as on a model of ``num_layers`` layers (several
        layer cuts, a prefill stage plus a layer stage); checks stage and layer order again."""
        steps = []
        for step, resolved in zip(self.steps, self.resolve_budgets(budget)):
            floor = step.method.min_retain(num_layers)
            if resolved.retain is not None and resolved.retain < floor:
                raise ValueError(
                    f"{step.method.name} keeps every visual token before its first cut, so on this {num_layers}-layer "
                    f"model its FLOP-equivalent retention is at least {floor:.3f}; asked {resolved.retain}"
                )
            steps += [Step(part, step.budget if own is None else own) for part, own in step.method.parts(num_layers, resolved)]
        return Pipeline(*steps)

    def of_stage(self, stage: str) -> list[Step]:
        return [s for s in self.steps if s.method.stage == stage]

    def describe(self) -> str:
        return " > ".join(
            s.method.describe() + (f" [{s.budget.describe()}]" if s.budget else "") for s in self.steps
        )


def as_pipeline(method: "str | Method | Pipeline", **method_kwargs: Any) -> Pipeline:
    """Accept what users pass to ``vtc.wrap``: a name, a spec string, a method or a pipeline."""
    if isinstance(method, Pipeline):
        if method_kwargs:
            raise TypeError("method keyword arguments cannot be combined with a Pipeline")
        return method
    if isinstance(method, Method):
        if method_kwargs:
            raise TypeError("method keyword arguments cannot be combined with a method instance")
        return Pipeline(method)
    if not isinstance(method, str):
        raise TypeError(f"expected a method name, spec, Method or Pipeline, got {type(method).__name__}")
    pipeline = Pipeline.parse(method)
    if method_kwargs:
        if len(pipeline.steps) != 1:
            raise TypeError("method keyword arguments need a single-method spec; use name(knob=value) in the spec")
        step = pipeline.steps[0]
        step.method = dataclasses.replace(step.method, **method_kwargs)
    return pipeline


def _build_step(spec: StepSpec) -> Step:
    """A registered method from a parsed step; bad knob names or types become a ValueError naming them."""
    cls = get(spec.name)
    if "layer" in spec.knobs and cls.stage not in ("vision", "layer", "cache"):
        raise ValueError(f"{spec.name!r} is a {cls.stage}-stage method; '@layer' applies to vision, layer and cache methods only")
    try:
        method = cls(**spec.knobs)
    except KnobError as err:  # already names the method, the knob and the type it expects
        raise ValueError(str(err)) from None
    except TypeError as err:
        raise ValueError(f"bad knobs for {spec.name!r}: {err}") from None
    return Step(method, spec.budget)


def check_method(method: str, budget: Budget) -> None:
    """What ``vtc.wrap`` would refuse about a method string and budget, found without a model: unknown
    names, stage order, knob names and types, a step left without a budget, or a trained directory's files.
    The CLI calls it before it loads a model or decodes a video."""
    path = trained_dir(method)
    if path is None:
        Pipeline.parse(method).resolve_budgets(budget)
        return
    from .trained.store import read_record

    read_record(path)
