"""One budget vocabulary shared by every method."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

Scope = Literal["video", "frame"]


@dataclass(frozen=True)
class Budget:
    """How many visual tokens a method may keep.

    ``retain`` is a fraction of the tokens the method receives; ``tokens`` an absolute count.
    With ``scope="frame"`` either applies to each frame separately (the total is then the
    per-frame count times the number of frames). Papers define "retention" three ways; in vtc it
    always means tokens that leave the method (and, for prefill methods, enter the LLM).
    """

    retain: float | None = None
    tokens: int | None = None
    scope: Scope = "video"

    def __post_init__(self) -> None:
        # bool is an int in Python: retain=True must not read as 1.0, nor tokens=True as 1.
        if self.retain is not None and (isinstance(self.retain, bool) or not isinstance(self.retain, numbers.Real)):
            raise TypeError(f"retain must be a number (a fraction in (0, 1]), got {self.retain!r}")
        if self.tokens is not None and (isinstance(self.tokens, bool) or not isinstance(self.tokens, numbers.Integral)):
            raise TypeError(f"tokens must be an integer count, got {self.tokens!r}")
        if self.retain is not None and self.tokens is not None:
            raise ValueError("Budget takes either retain= (a fraction) or tokens= (a count), not both")
        if self.retain is not None and not 0.0 < self.retain <= 1.0:
            raise ValueError(f"retain must be in (0, 1], got {self.retain}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"tokens must be >= 1, got {self.tokens}")
        if self.scope not in ("video", "frame"):
            raise ValueError(f"scope must be 'video' or 'frame', got {self.scope!r}")

    @property
    def is_set(self) -> bool:
        return self.retain is not None or self.tokens is not None

    def count(self, available: int) -> int:
        """Tokens to keep out of ``available`` (one frame for scope='frame', else the whole video).

        A fraction rounds up so that a non-empty input never keeps zero tokens.
        """
        if available <= 0:
            return 0
        if self.tokens is not None:
            return min(self.tokens, available)
        if self.retain is None:
            return available
        return max(1, min(available, math.ceil(self.retain * available - 1e-9)))

    def describe(self) -> str:
        if self.tokens is not None:
            return f"tokens={self.tokens}" + ("/frame" if self.scope == "frame" else "")
        if self.retain is not None:
            return f"retain={self.retain:g}" + ("/frame" if self.scope == "frame" else "")
        return "method default"


def apportion(sizes: list[int], total: int) -> list[int]:
    """Split ``total`` over groups of ``sizes``: one per non-empty group, the rest in proportion to size - 1.

    The proportional part uses largest remainders (earlier groups win ties) in exact integer
    arithmetic, so the result sums to ``min(total, sum(sizes))`` and no group exceeds its size.
    With fewer than one per non-empty group, the largest groups (earlier first) get one each.
    """
    capacity = sum(sizes)
    if total >= capacity:
        return list(sizes)
    filled = [i for i, s in enumerate(sizes) if s > 0]
    out = [0] * len(sizes)
    if total < len(filled):
        for i in sorted(filled, key=lambda i: -sizes[i])[:total]:
            out[i] = 1
        return out
    rest, spare = total - len(filled), capacity - len(filled)
    remainders = []
    for i in filled:
        share, remainder = divmod(rest * (sizes[i] - 1), spare)
        out[i] = 1 + share
        remainders.append((-remainder, i))
    for _, i in sorted(remainders)[: total - sum(out)]:
        out[i] += 1
    return out
