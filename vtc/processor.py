"""``vtc.VideoProcessor``: frame selection in front of a model's own processor (stage "select").

Decode cheaply for scoring (low-resolution candidates and the container's keyframes), let a
selector choose frame groups (and, where the processor sizes frames from their pixels, a
resolution) under a visual-token budget, decode only the chosen frames, and hand them to the
Hugging Face processor with their real source indices (``VideoMetadata(frames_indices=...)``), so
Qwen3-VL, SmolVLM and VideoLLaMA3 write the right timestamps. Everything that differs per family
(token counts, resizing, batching, positions rebuilt after processing, the default query scorer)
is the family's processor policy, named by its adapter in ``patches/``. Decoding uses decord
(container keyframes come from its index). Selection records are on ``inputs.vtc_selection``.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .budget import Budget
from .pipeline import as_pipeline
from .select.base import Frames, Plan, Selector, UnitCost
from .select.decode import Candidates, decode_candidates, decode_frames, units
from .patches.processor_policy import Scorer
from .video import DecodedVideo, damage_note, logger

DEFAULT_SCALES = (1.0, 0.75, 0.5, 0.375, 0.25)


# The latest selection per model, kept beside the model (not on it: the model stays as the user built it,
# and a model that is garbage-collected takes its entry with it).
_PENDING_SELECTIONS: weakref.WeakKeyDictionary[Any, tuple[torch.Tensor, SelectionRecord]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class SelectionRecord:
    """What the select stage chose, per sample (the processor path's counterpart of ``vtc_stats``)."""

    selected_frames: list[list[int]] = field(default_factory=list)
    selected_times: list[list[float]] = field(default_factory=list)
    scenes: list[list[int]] = field(default_factory=list)
    visual_tokens: list[int] = field(default_factory=list)
    budget_tokens: list[int] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class VideoProcessor:
    """Wrap a Hugging Face video-LLM processor so frames are chosen before the vision encoder.

    ``select`` is a select-stage method name/spec (``"keyclips"``, ``"keyframes(references=3):0.2"``)
    or a ``Selector``. The budget (``retain`` or ``tokens``) is in visual tokens: ``retain`` is a
    fraction of what every candidate frame would cost at full resolution. Candidates are sampled at
    ``candidate_fps`` and scored at ``scoring_size`` pixels square. ``scales`` (processors that size
    frames from their pixels: the Qwen line) are the resolutions a plan may pick. ``model`` gives the
    default query scorer where the family has one (the Qwen families: the model's own vision tower and
    text embeddings) and Qwen2.5-VL's positions; ``scorer(frames, temporal_patch, question) ->
    (features [U, D], query [D])`` replaces it. Prompts come from the processor's chat template.
    What differs per family is its adapter's processor policy (``vtc.patches.processor_policy``).
    """

    def __init__(
        self, processor: Any, select: str | Selector, *, retain: float | None = None, tokens: int | None = None,
        model: Any = None, candidate_fps: float = 1.0, scoring_size: int = 32,
        scales: Sequence[float] | None = None, scorer: Scorer | None = None, progress: bool = False,
    ) -> None:
        from .patches import processor_policy_for

        self.policy = processor_policy_for(processor, model)
        self.policy.prompts(["?"])  # a processor without a chat template fails here, not on the first video
        if self.policy.needs_model and model is None:
            raise ValueError(self.policy.needs_model)
        if not self.policy.resizes_frames and scales is not None and tuple(scales) != (1.0,):
            raise ValueError(
                f"{type(processor).__name__} fixes each frame's token count itself, so there is no resolution to "
                "trade: leave scales unset (only processors that size frames from their pixels, the Qwen line, can)"
            )
        self.processor, self.model = processor, model
        self.selector, spec_budget = _selector(select)
        if spec_budget is not None and (retain is not None or tokens is not None):
            raise ValueError(f"{select!r} carries its own budget; do not also pass retain= or tokens=")
        self.budget = self.selector.resolve_budget(spec_budget or Budget(retain=retain, tokens=tokens))
        self.candidate_fps, self.scoring_size, self.progress = candidate_fps, scoring_size, progress
        scales = scales if scales is not None else (DEFAULT_SCALES if self.policy.resizes_frames else (1.0,))
        self.scales = tuple(sorted(set(scales), reverse=True))
        if not self.scales or self.scales[0] != 1.0 or self.scales[-1] <= 0:
            raise ValueError(f"scales must include 1.0 and be positive, got {scales}")
        self.scorer = scorer
        self.temporal_patch = self.policy.temporal_patch

    # -- the pipeline ------------------------------------------------------------------------------
    def plan(self, path: str | os.PathLike, question: str | None = None) -> tuple[Candidates, Frames, Plan, UnitCost]:
        """Decode candidates cheaply and let the selector choose (no full-resolution decoding yet)."""
        candidates = decode_candidates(path, self.candidate_fps, self.scoring_size, self.progress)
        thumbs, times, indices, keyframe = units(candidates, self.temporal_patch)
        frames = Frames(thumbs=thumbs, times=times, indices=indices, keyframe=keyframe)
        if "query" in self.selector.needs:
            if not question:
                raise ValueError(f"{self.selector.name} is query-aware: pass the question(s) to the processor")
            frames.features, frames.query = self._score(candidates.thumbs, question)
        cost = self.policy.cost(candidates.height, candidates.width, self.scales)
        return candidates, frames, self.selector.plan(frames, self.budget, cost), cost

    def __call__(self, videos: Sequence[str | os.PathLike], questions: Sequence[str]) -> Any:
        """Model inputs for one question per video (left-padded batch), built from the selected frames."""
        if len(videos) != len(questions):
            raise ValueError(f"got {len(videos)} videos and {len(questions)} questions; pass one question per video")
        record, decoded, group_times = SelectionRecord(), [], []
        for sample, (path, question) in enumerate(zip(videos, questions)):
            candidates, frames, plan, cost = self.plan(path, question)
            chosen = frames.indices[plan.keep].flatten()
            height, width = self.policy.frame_size(candidates.height, candidates.width, plan.scale)
            pixels = decode_frames(candidates.path, chosen.tolist(), height, width)
            seconds = chosen.double() / candidates.source_fps
            decoded.append(DecodedVideo(
                frames=pixels, timestamps=seconds.numpy(), indices=chosen.numpy(), source_fps=candidates.source_fps,
                total_frames=candidates.total_frames, backend="decord", requested_frames=None, clamped=False,
                damaged_frames=candidates.damaged,
            ))
            if len(candidates.damaged):
                note = f"sample {sample}: '{candidates.path}' has {damage_note(candidates.damaged)}"
                logger.warning("%s", note)
                record.notes.append(note)
            group_times.append(frames.times[plan.keep])
            record.selected_frames.append(chosen.tolist())
            record.selected_times.append(frames.times[plan.keep].tolist())
            record.scenes.append(list(plan.scenes or []))
            record.budget_tokens.append(self.budget.count(len(frames) * cost.full))
            record.scale.append(plan.scale)
            record.notes += plan.notes
        inputs = self.policy.process(decoded, list(questions))
        record.visual_tokens = self.policy.visual_tokens(inputs, decoded)
        for sample, (got, budget) in enumerate(zip(record.visual_tokens, record.budget_tokens)):
            if got > budget and not any("below one frame group" in n for n in record.notes):
                raise RuntimeError(
                    f"sample {sample}: the processor produced {got} visual tokens for a budget of {budget}; "
                    "its resizing disagrees with vtc's plan (please report this with the processor config)"
                )
        self.policy.finish(inputs, group_times)
        inputs.vtc_selection = record
        if self.model is not None:
            _PENDING_SELECTIONS[self.model] = (inputs["input_ids"].clone(), record)
        return inputs

    def _score(self, thumbs: np.ndarray, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        scorer = self.scorer
        if scorer is None:
            try:
                scorer = self.policy.default_scorer()
            except (NotImplementedError, ValueError) as err:
                raise type(err)(f"{self.selector.name} scores frames against the question; {err}") from None
        return scorer(thumbs, self.temporal_patch, question)


def processor_selection(model: Any, captured: dict[str, Any]) -> SelectionRecord | None:
    """The record of the VideoProcessor call that built these inputs, if it was given this model.

    Lets a wrapped model report source frame indices in ``vtc_stats`` for inputs the processor
    path selected; matched on ``input_ids`` so inputs built another way never inherit it.
    """
    pending = _PENDING_SELECTIONS.get(model)
    ids = captured.get("input_ids")
    if pending is None or ids is None or pending[0].shape != ids.shape or not torch.equal(pending[0], ids.detach().cpu()):
        return None
    return pending[1]


def _selector(select: str | Selector) -> tuple[Selector, Budget | None]:
    if isinstance(select, Selector):
        return select, None
    pipeline = as_pipeline(select)
    if len(pipeline.steps) != 1 or not isinstance(pipeline.steps[0].method, Selector):
        raise ValueError(
            f"vtc.VideoProcessor takes one select-stage method (uniform-frames, fps, keyframes, keyclips, query, "
            f"scenes), got {select!r}; put prefill/layer methods in vtc.wrap"
        )
    return pipeline.steps[0].method, pipeline.steps[0].budget
