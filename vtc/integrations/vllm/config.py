"""The plugin's configuration: what it reads, what it refuses at start-up, and how many tokens a video keeps.

No vLLM import here, so the main test suite checks every refusal without vLLM installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...budget import Budget
from ...pipeline import Pipeline

KEY = "vtc"
POSITION_CONVENTIONS = ("vllm", "transformers")
# Inputs besides the features that the plugin reads from vLLM's vision tower (.saliency).
SUPPORTED_NEEDS = frozenset({"vision_saliency"})
_FIELDS = {"method", "retain", "tokens", "scope", "positions"}


@dataclass(frozen=True)
class ServingConfig:
    """A parsed, validated ``{"method": ..., "retain"/"tokens": ..., "positions": ...}``.

    positions: where text after a video continues. "vllm" (default): after the video's largest M-RoPE
    position, as vLLM and Qwen's original code do. "transformers": max(h, w) after the video's start, as
    transformers 5.x's ``get_rope_index`` does; for checkpoints trained with transformers 5 (the shipped
    reference model), which otherwise see their question at positions they were never trained on.
    """

    pipeline: Pipeline
    budget: Budget
    positions: str = "vllm"

    @property
    def needs(self) -> frozenset[str]:
        """What the steps read besides the features (a subset of ``SUPPORTED_NEEDS``)."""
        return frozenset().union(*(step.method.needs for step in self.pipeline.steps))

    def kept_count(self, grid: tuple[int, int, int]) -> int:
        """Tokens one video of merged token grid (T, H, W) keeps after every step, before any feature exists."""
        t, h, w = grid
        frame_sizes, count = [h * w] * t, t * h * w
        for i, step in enumerate(self.pipeline.steps):
            budget = step.method.resolve_budget(step.budget or self.budget)
            counted = step.method.kept_count(frame_sizes, budget)
            if counted is None:  # checked at start-up; a grid cannot change it
                raise RuntimeError(f"internal error: {step.method.name} has no exact count")
            count, frame_sizes = counted, []
        return count


def parse(raw: Any) -> ServingConfig | None:
    """The ``vtc`` entry of the model's config (None: no compression). Every mistake is a ValueError that
    names it, raised while the engine starts, before any request."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"method": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"vtc: the config must be a mapping such as {{'method': 'vidcom2', 'retain': 0.25}}, got {raw!r}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"vtc: unknown config key(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    method = raw.get("method")
    if not isinstance(method, str) or not method.strip():
        raise ValueError("vtc: 'method' must be a method name or spec string, e.g. 'vidcom2' or 'dtd:0.5'")
    positions = raw.get("positions", "vllm")
    if positions not in POSITION_CONVENTIONS:
        raise ValueError(f"vtc: 'positions' must be one of {POSITION_CONVENTIONS}, got {positions!r}")
    try:
        budget = Budget(retain=raw.get("retain"), tokens=raw.get("tokens"), scope=raw.get("scope", "video"))
        pipeline = Pipeline.parse(method)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"vtc: {err}") from None
    for step in pipeline.steps:
        _check_step(step.method, step.budget or budget, first=step is pipeline.steps[0])
    return ServingConfig(pipeline, budget, positions)


def exact_alternatives() -> list[str]:
    """Prefill methods the plugin can size exactly (with a vtc budget) and run on vLLM's inputs."""
    from ...registry import get, list_methods

    return [n for n in list_methods()
            if get(n).stage == "prefill" and get(n).exact_budget and not _static_needs(get(n)) - SUPPORTED_NEEDS]


def _check_step(method: Any, budget: Budget, first: bool) -> None:
    name = method.name
    if method.stage != "prefill":
        raise ValueError(
            f"vtc: {name!r} is a {method.stage}-stage method; inside vLLM vtc runs prefill-stage methods only "
            f"(exact-budget ones: {', '.join(exact_alternatives())})"
        )
    if method.needs - SUPPORTED_NEEDS:
        raise ValueError(
            f"vtc: {name!r} needs {sorted(method.needs - SUPPORTED_NEEDS)}, which the vLLM plugin does not capture "
            f"(it reads the vision tower's output and its last block's saliency); methods that run on it: "
            f"{', '.join(exact_alternatives())}"
        )
    try:
        resolved = method.resolve_budget(budget)
    except ValueError as err:
        raise ValueError(f"vtc: {err}") from None
    if len(method.parts(1, resolved)) > 1:
        raise ValueError(f"vtc: {method.describe()} also runs inside the language model (a layer part), which the "
                         f"vLLM plugin does not do; leave that knob unset")
    if not first and resolved.scope == "frame":
        raise ValueError(f"vtc: {name!r} after another step cannot take a per-frame budget (its frames' sizes depend on the video)")
    if method.kept_count([1], resolved) is None:
        why = "its paper knob or threshold decides" if resolved == Budget() or not resolved.is_set else "it is a structured method"
        raise ValueError(
            f"vtc: {method.describe()} keeps a number of tokens the video decides ({why}), but vLLM sizes each "
            f"video's placeholder run before any feature exists; give it a budget (retain= or tokens=) or use an "
            f"exact-budget method: {', '.join(exact_alternatives())}"
        )


def _static_needs(cls: type) -> frozenset[str]:
    """Needs of a method built with its defaults (a property on some classes)."""
    try:
        return cls().needs
    except (TypeError, ValueError):
        return frozenset({"unknown"})
