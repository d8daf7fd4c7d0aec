"""Knob types of a registered method, checked whenever one is built (spec, keyword arguments or Python),
so ``dtd(threshold=abc)`` fails at once naming the knob and the type it expects, not deep in a forward."""
from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any, Callable, Mapping

# What a value must be for each annotated type; a bool is an int in Python, so numbers refuse it explicitly.
_ACCEPTS: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
    float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    type(None): lambda v: v is None,
}


class KnobError(TypeError, ValueError):
    """A knob name a method does not have, or a value of the wrong type: a TypeError, and also a ValueError
    like every range check in the methods' ``__post_init__``, so one ``except ValueError`` catches any bad knob."""


@functools.cache
def knob_types(cls: type) -> dict[str, Any]:
    """Constructor knobs of a dataclass method and their annotated types (resolved once per class)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def check_knobs(cls: type, knobs: Mapping[str, Any]) -> None:
    """Refuse unknown knob names and values of the wrong type, with a message that names both."""
    expected = knob_types(cls)
    name = getattr(cls, "name", "") or cls.__name__
    unknown = sorted(set(knobs) - set(expected))
    if unknown:
        known = ", ".join(expected) or "none"
        raise KnobError(f"{name} has no knob {', '.join(map(repr, unknown))}; its knobs: {known}")
    for knob, value in knobs.items():
        options = _options(expected[knob])
        if all(o in _ACCEPTS or isinstance(o, type) for o in options) and not any(_accepts(o, value) for o in options):
            wanted = " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
            raise KnobError(f"{name} knob {knob!r} expects {wanted}, got {value!r} ({type(value).__name__})")


def checked_init(cls: type) -> Callable[..., None]:
    """``cls.__init__`` preceded by ``check_knobs`` on the arguments it is given."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        check_knobs(cls, {**dict(zip(knob_types(cls), args)), **kwargs})
        init(self, *args, **kwargs)

    return __init__


def _options(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _accepts(option: Any, value: Any) -> bool:
    check = _ACCEPTS.get(option)
    return check(value) if check is not None else isinstance(value, option)
