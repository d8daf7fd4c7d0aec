"""The method spec grammar, parsed without torch so the CLI can refuse a bad spec before loading anything.

``name[(knob=value,...)][@layer][:budget]``, steps chained with ``>``: ``"dtd:0.5>fastv@2:0.5"``.
A budget <= 1 is a retain fraction, a larger integer a token count. ``trained:DIR`` (a compressor
saved by ``vtc train``) stands alone: its directory may hold any character, so it is never chained.
Method names, stages and knob types are checked against the registry by :mod:`vtc.pipeline`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budget import Budget

TRAINED_PREFIX = "trained:"
_STEP_RE = re.compile(
    r"^(?P<name>[A-Za-z_][\w-]*)(?:\((?P<args>[^)]*)\))?(?:@(?P<layer>\d+))?(?::(?P<budget>\d+(?:\.\d*)?|\.\d+))?$"
)
_SPEC_HELP = "steps are name[(knob=value,...)][@layer][:budget] joined by single '>', e.g. 'dtd:0.5>fastv@2:0.5'"


@dataclass(frozen=True)
class StepSpec:
    """One parsed step: the method's name, its knobs (``@layer`` becomes knob ``layer``) and its own budget."""

    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None


def parse_spec(spec: str) -> list[StepSpec]:
    """The steps of ``spec``; empty steps (``a>>b``, ``a>``, ``>a``) and malformed ones are errors."""
    if not isinstance(spec, str):
        raise TypeError(f"a method spec must be a string, got {type(spec).__name__}")
    parts = [part.strip() for part in spec.split(">")]
    if not any(parts):
        raise ValueError(f"empty method spec {spec!r}")
    if not all(parts):
        raise ValueError(f"method spec {spec!r} has an empty step: {_SPEC_HELP}")
    return [_parse_step(part, spec) for part in parts]


def trained_dir(spec: str) -> Path | None:
    """The directory of a ``trained:DIR`` spec (None for any other spec); composing one is refused."""
    text = spec.strip()
    if text.startswith(TRAINED_PREFIX):
        path = Path(text[len(TRAINED_PREFIX):]).expanduser()
        if ">" not in text or path.is_dir():
            return path
    elif not any(part.strip().startswith(TRAINED_PREFIX) for part in text.split(">")):
        return None
    raise ValueError(
        f"method spec {spec!r} composes a trained compressor with other steps, which vtc does not support: "
        "use 'trained:DIR' alone as the method"
    )


def _parse_step(text: str, spec: str) -> StepSpec:
    match = _STEP_RE.match(text)
    if not match:
        raise ValueError(f"cannot parse method step {text!r} of {spec!r}: {_SPEC_HELP}")
    knobs = _parse_knobs(match["args"] or "")
    if match["layer"] is not None:
        if "layer" in knobs:
            raise ValueError(f"method step {text!r} sets the layer twice (@layer and layer=)")
        knobs["layer"] = int(match["layer"])
    return StepSpec(match["name"], knobs, _parse_budget(match["budget"]))


def _parse_budget(text: str | None) -> Budget | None:
    """``0.25`` -> retain 0.25; ``256`` -> 256 tokens; a fractional count above 1 is an error."""
    if text is None:
        return None
    value = float(text)
    if value <= 1.0:
        return Budget(retain=value)
    if value != int(value):
        raise ValueError(f"a token budget must be an integer, got {text}")
    return Budget(tokens=int(value))


def _parse_knobs(text: str) -> dict[str, Any]:
    knobs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ValueError(f"method knob {item!r} must be written key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in knobs:
            raise ValueError(f"method knob {key!r} is given twice")
        knobs[key] = _parse_value(raw)
    return knobs


def _parse_value(raw: str) -> Any:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]  # a quoted string (a path) stays a string
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw
