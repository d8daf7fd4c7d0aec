"""What a frame selector sees (``Frames``), what it decides (``Plan``) and what a frame costs (``UnitCost``).

Selectors act before the vision encoder, so they never see visual tokens: they see cheap
thumbnails of candidate frames with their real times. The unit they choose is one temporal
token group (``temporal_patch`` consecutive candidate frames: 2 for the Qwen families), because
a family that stacks two frames into one token cannot keep half of a pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from ..budget import Budget
from ..method import Method
from ..tokens import Selection, VisualTokens


@dataclass
class Frames:
    """Candidate units of one video, as a selector sees them.

    thumbs:   [U, S, C, h, w] float intensities in [0, 1]: U units of S sub-frames each, low resolution.
    times:    [U] seconds (from the start of the source video) of each unit's first frame.
    indices:  [U, S] source frame index of every sub-frame.
    keyframe: [U] bool, True where the container marks a sub-frame as a codec keyframe (all False if unknown).
    features: [U, D] optional pooled visual features (query-aware selectors).
    query:    [D] optional pooled text embedding of the question, in the same space as ``features``.
    """

    thumbs: torch.Tensor
    times: torch.Tensor
    indices: torch.Tensor
    keyframe: torch.Tensor
    features: torch.Tensor | None = None
    query: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.thumbs.shape[0])


@dataclass
class UnitCost:
    """Visual tokens of one unit at a spatial scale, and the scales the caller can realise.

    Inside ``vtc.wrap`` the pixels are already processed, so only scale 1.0 exists; the
    ``VideoProcessor`` path can resize before the processor and offers lower scales too.
    ``shares``: whether a kept unit may keep only a fraction of its tokens (wrap path only).
    """

    tokens_at: Callable[[float], int]
    scales: tuple[float, ...] = (1.0,)
    shares: bool = False

    @property
    def full(self) -> int:
        return int(self.tokens_at(1.0))


@dataclass
class Plan:
    """A selector's decision for one video.

    keep:   sorted unit positions to keep.
    scale:  spatial scale of every kept unit (one resolution per video: the processor takes one).
    share:  [K] fraction of each kept unit's tokens to keep (None: all of them).
    scenes: unit positions where a scene starts (``scenes`` selector), else None.
    notes:  what the stats should say (a minimum of one unit taken, a budget left unspent).
    """

    keep: torch.Tensor
    scale: float = 1.0
    share: torch.Tensor | None = None
    scenes: list[int] | None = None
    notes: list[str] = field(default_factory=list)


class Selector(Method):
    """A select-stage method: chooses units of a video before the vision encoder.

    Subclasses implement ``plan``. ``budget`` is in visual tokens like every method's: a
    ``retain`` fraction of what every candidate unit would cost at full resolution, or ``tokens``.
    """

    stage = "select"
    # "query": needs pooled features and a question embedding; "times": needs the frame groups' real
    # times. Either way, inside ``vtc.wrap`` it decides after the encoder (no encoder saving);
    # pixel-only selectors decide before it.
    needs: ClassVar[frozenset[str]] = frozenset()

    def plan(self, frames: Frames, budget: Budget, cost: UnitCost) -> Plan:
        raise NotImplementedError

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        raise TypeError(f"{self.name} is a select-stage method: it chooses frames, the engine applies the plan")


def token_budget(budget: Budget, units: int, cost: UnitCost) -> int:
    """The token budget for a video of ``units`` candidate units at full resolution."""
    return budget.count(units * cost.full)


def affordable_units(name: str, budget: Budget, tokens: int, per_unit: int, notes: list[str]) -> int:
    """Whole units that fit in ``tokens``; refuses an absolute budget below one unit.

    A ``retain`` fraction below one unit keeps one unit and says so (an absolute count is a
    user's explicit limit, so missing it is an error; a fraction of a short clip is not).
    """
    count = tokens // per_unit
    if count >= 1:
        return int(count)
    if budget.tokens is not None:
        raise ValueError(
            f"{name}: a budget of {budget.tokens} visual tokens is smaller than one frame group "
            f"({per_unit} tokens at this resolution); raise tokens= or lower the resolution"
        )
    notes.append(f"budget of {tokens} tokens is below one frame group ({per_unit}); kept one")
    return 1


def frame_novelty(thumbs: torch.Tensor, references: int = 2) -> torch.Tensor:
    """[U*S] how poorly each frame is predicted by the best of its ``references`` predecessors.

    Codec-inspired (multi-reference prediction): mean absolute intensity difference to the
    closest of the previous frames. A one-frame flash is novel; the frame after it is not
    (it matches the frame before the flash); a cut is novel; the first frame is infinitely novel.
    """
    flat = thumbs.flatten(0, 1).flatten(1).float()
    novelty = torch.full((flat.shape[0],), float("inf"), device=flat.device)
    for lag in range(1, references + 1):
        if flat.shape[0] <= lag:
            break
        diff = (flat[lag:] - flat[:-lag]).abs().mean(dim=1)
        padded = torch.full_like(novelty, float("inf"))
        padded[lag:] = diff
        novelty = torch.minimum(novelty, padded) if lag > 1 else padded
    return novelty


def unit_novelty(thumbs: torch.Tensor, references: int = 2) -> torch.Tensor:
    """[U] the most novel frame of each unit (a unit is as new as its newest frame)."""
    return frame_novelty(thumbs, references).view(thumbs.shape[0], thumbs.shape[1]).amax(dim=1)


def evenly(count: int, available: int, device: torch.device | None = None) -> torch.Tensor:
    """``count`` evenly spaced positions in ``range(available)``, first and last included when count > 1."""
    count = min(count, available)
    return torch.linspace(0, available - 1, count, device=device).round().long().unique()


def cosine(features: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(features.float(), query.float()[None], dim=-1)


def require_query(name: str, frames: Frames) -> None:
    if frames.features is None or frames.query is None:
        raise ValueError(
            f"{name} is query-aware and needs the question: pass question(s) to vtc.VideoProcessor "
            "(or a prompt with text after the video inside vtc.wrap)"
        )
