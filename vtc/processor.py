"""``vtc.VideoProcessor``: frame selection in front of a model's own processor (stage "select").

Decode cheaply for scoring (low-resolution candidates and the container's keyframes), let a
selector choose frame groups and a resolution under a visual-token budget, decode only the
chosen frames, and hand them to the Hugging Face processor with their real source indices
(``VideoMetadata(frames_indices=...)``), so Qwen3-VL, SmolVLM and VideoLLaMA3 write the right
timestamps. Qwen2.5-VL spaces temporal ids evenly, so for it the processor also returns
``position_ids`` rebuilt from the real times (it needs ``model=`` for that); Qwen2-VL's temporal ids
count frame groups and carry no time, so there is nothing to rebuild. The Qwen processors size
frames from the pixels they get, so plans there also trade resolution against frame count; the
other families' processors fix each frame's token count themselves (measured once per video size
by running the processor on frames of noise), so plans there choose frames only. Decoding uses decord
(container keyframes come from its index). Selection records are on ``inputs.vtc_selection``.
"""
from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .budget import Budget
from .pipeline import as_pipeline
from .select.base import Frames, Plan, Selector, UnitCost
from .select.decode import Candidates, decode_candidates, decode_frames, units
from .video import DecodedVideo, damage_note, logger

DEFAULT_SCALES = (1.0, 0.75, 0.5, 0.375, 0.25)
QWEN_PROCESSORS = ("Qwen2VL", "Qwen2_5_VL", "Qwen3VL")
Scorer = Callable[[np.ndarray, int, str], tuple[torch.Tensor, torch.Tensor]]


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
    ``candidate_fps`` and scored at ``scoring_size`` pixels square. ``scales`` (Qwen processors only)
    are the resolutions a plan may pick. ``model`` gives the default query scorer on the Qwen
    families (the model's own vision tower and text embeddings) and Qwen2.5-VL's positions;
    ``scorer(frames, temporal_patch, question) -> (features [U, D], query [D])`` replaces it. Prompts
    come from the processor's chat template (the Qwen processors fall back to Qwen's prompt format).
    """

    def __init__(
        self, processor: Any, select: str | Selector, *, retain: float | None = None, tokens: int | None = None,
        model: Any = None, candidate_fps: float = 1.0, scoring_size: int = 32,
        scales: Sequence[float] | None = None, scorer: Scorer | None = None, progress: bool = False,
    ) -> None:
        self.qwen = type(processor).__name__.startswith(QWEN_PROCESSORS)
        if not self.qwen and not getattr(processor, "chat_template", None):
            raise ValueError(
                f"{type(processor).__name__} has no chat template; vtc.VideoProcessor writes each prompt with "
                "the processor's own template: set processor.chat_template (released checkpoints ship one)"
            )
        if not self.qwen and scales is not None and tuple(scales) != (1.0,):
            raise ValueError(
                f"{type(processor).__name__} fixes each frame's token count itself, so there is no resolution to "
                "trade: leave scales unset (only the Qwen processors size frames from the pixels they get)"
            )
        self.processor, self.model = processor, model
        self.selector, spec_budget = _selector(select)
        if spec_budget is not None and (retain is not None or tokens is not None):
            raise ValueError(f"{select!r} carries its own budget; do not also pass retain= or tokens=")
        self.budget = self.selector.resolve_budget(spec_budget or Budget(retain=retain, tokens=tokens))
        self.candidate_fps, self.scoring_size, self.progress = candidate_fps, scoring_size, progress
        scales = scales if scales is not None else (DEFAULT_SCALES if self.qwen else (1.0,))
        self.scales = tuple(sorted(set(scales), reverse=True))
        if not self.scales or self.scales[0] != 1.0 or self.scales[-1] <= 0:
            raise ValueError(f"scales must include 1.0 and be positive, got {scales}")
        self.scorer = scorer
        video = processor.video_processor
        self.temporal_patch = int(getattr(video, "temporal_patch_size", 1) or 1)
        if self.qwen:
            self.factor = int(video.patch_size) * int(getattr(video, "merge_size", 1))
            self.min_pixels = int(video.size["shortest_edge"])
            self.max_pixels = int(video.size["longest_edge"])
        self._measured: dict[tuple[int, int], tuple[int, int]] = {}
        self.rebuild_positions = type(processor).__name__.startswith("Qwen2_5_VL")
        if self.rebuild_positions and model is None:
            raise ValueError(
                "Qwen2.5-VL assumes evenly spaced frames; pass model= so vtc.VideoProcessor can rebuild "
                "the temporal positions of the selected frames from their real times"
            )

    # -- sizes and costs -------------------------------------------------------------------------
    def frame_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """(h, w) the family's processor keeps for a frame (multiples of patch x merge, within its pixel
        limits), after first scaling the frame it would produce by ``scale``."""
        if not self.qwen:
            return height, width  # the processor resizes; hand it the source size
        h, w = self._snap(height, width)
        return self._snap(h * scale, w * scale) if scale != 1.0 else (h, w)

    def _snap(self, height: float, width: float) -> tuple[int, int]:
        f = self.factor
        h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return int(h), int(w)

    def cost(self, height: int, width: int) -> UnitCost:
        if not self.qwen:
            per_unit = self.temporal_patch * self.measured_tokens(height, width)[0]
            return UnitCost(tokens_at=lambda scale: per_unit, scales=(1.0,), shares=False)

        def tokens_at(scale: float) -> int:
            h, w = self.frame_size(height, width, scale)
            return (h // self.factor) * (w // self.factor)

        return UnitCost(tokens_at=tokens_at, scales=self.scales, shares=False)

    def measured_tokens(self, height: int, width: int) -> tuple[int, int]:
        """(visual tokens per frame, visual tokens per video besides its frames) that the processor writes
        for frames of this size, from running it on one and two frames of noise (noise, so that a
        processor's own redundancy dropping, like VideoLLaMA3's, keeps every token: an upper bound)."""
        if (height, width) not in self._measured:
            counts, rng = [], np.random.default_rng(0)
            for n in (self.temporal_patch, 2 * self.temporal_patch):
                noise = DecodedVideo(
                    frames=rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
                    timestamps=np.arange(n, dtype=float), indices=np.arange(n), source_fps=1.0, total_frames=n,
                    backend="noise", requested_frames=None, clamped=False,
                )
                counts.append(self._visual_counts(self._process([noise], ["?"]))[0])
            per_frame = (counts[1] - counts[0]) // self.temporal_patch
            if per_frame <= 0:
                raise RuntimeError(f"{type(self.processor).__name__} wrote no visual tokens per frame; cannot plan a budget")
            self._measured[(height, width)] = (per_frame, counts[0] - per_frame * self.temporal_patch)
        return self._measured[(height, width)]

    def _visual_counts(self, inputs: Any) -> list[int]:
        """Visual placeholder tokens per prompt (video tokens, or image tokens where frames are images)."""
        ids = inputs["input_ids"]
        found = [int(i) for i in (getattr(self.processor, k, None) for k in ("video_token_id", "image_token_id"))
                 if i is not None and bool((ids == int(i)).any())]
        return [sum(int((row == i).sum()) for i in found) for row in ids]

    def _process(self, videos: list[DecodedVideo], questions: list[str]) -> Any:
        """Model inputs; non-Qwen processors run per sample (several cannot batch clips of different
        lengths) and are left-padded together."""
        from .collate import left_pad_collate
        from .runner import build_inputs

        if self.qwen:
            return build_inputs(self.processor, videos, questions)
        samples = [build_inputs(self.processor, [v], [q]) for v, q in zip(videos, questions)]
        return left_pad_collate(samples, self.processor.tokenizer.pad_token_id)

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
        cost = self.cost(candidates.height, candidates.width)
        return candidates, frames, self.selector.plan(frames, self.budget, cost), cost

    def __call__(self, videos: Sequence[str | os.PathLike], questions: Sequence[str]) -> Any:
        """Model inputs for one question per video (left-padded batch), built from the selected frames."""
        if len(videos) != len(questions):
            raise ValueError(f"got {len(videos)} videos and {len(questions)} questions; pass one question per video")
        record, decoded, group_times = SelectionRecord(), [], []
        for sample, (path, question) in enumerate(zip(videos, questions)):
            candidates, frames, plan, cost = self.plan(path, question)
            chosen = frames.indices[plan.keep].flatten()
            height, width = self.frame_size(candidates.height, candidates.width, plan.scale)
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
        inputs = self._process(decoded, list(questions))
        if self.qwen:
            merge = int(getattr(self.processor.video_processor, "merge_size", 1))
            record.visual_tokens = [int(t * h * w) // merge**2 for t, h, w in inputs["video_grid_thw"].tolist()]
        else:
            extra = [self.measured_tokens(v.frames.shape[1], v.frames.shape[2])[1] for v in decoded]
            record.visual_tokens = [n - e for n, e in zip(self._visual_counts(inputs), extra)]
        for sample, (got, budget) in enumerate(zip(record.visual_tokens, record.budget_tokens)):
            if got > budget and not any("below one frame group" in n for n in record.notes):
                raise RuntimeError(
                    f"sample {sample}: the processor produced {got} visual tokens for a budget of {budget}; "
                    "its resizing disagrees with vtc's plan (please report this with the processor config)"
                )
        if self.rebuild_positions:
            from .patches.qwen_select import positions_at_times

            inputs["position_ids"] = positions_at_times(self.model, inputs, group_times)
        inputs.vtc_selection = record
        if self.model is not None:
            _PENDING_SELECTIONS[self.model] = (inputs["input_ids"].clone(), record)
        return inputs

    def _score(self, thumbs: np.ndarray, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scorer is not None:
            return self.scorer(thumbs, self.temporal_patch, question)
        if not self.qwen:
            raise NotImplementedError(
                f"{self.selector.name} scores frames against the question; the default scorer (the model's own "
                f"vision tower) is written for the Qwen families, not {type(self.processor).__name__}: pass "
                "scorer=, or use vtc.wrap(model, 'query', ...), which scores every family at the language model"
            )
        if self.model is None:
            raise ValueError(
                f"{self.selector.name} scores frames against the question: pass model= (its own vision tower "
                "and text embeddings are the default scorer) or scorer="
            )
        return model_scorer(self.model, self.processor)(thumbs, self.temporal_patch, question)


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


def model_scorer(model: Any, processor: Any, chunk: int = 256) -> Scorer:
    """Pooled visual features of each frame group and the pooled question embedding, from ``model`` itself."""

    def score(thumbs: np.ndarray, temporal_patch: int, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        pad = (-len(thumbs)) % temporal_patch
        frames = np.concatenate([thumbs, np.repeat(thumbs[-1:], pad, axis=0)]) if pad else thumbs
        pooled = []
        with torch.no_grad():
            for start in range(0, len(frames), chunk * temporal_patch):
                part = frames[start : start + chunk * temporal_patch]
                batch = processor.video_processor(videos=[part], do_sample_frames=False, return_tensors="pt")
                grid = batch["video_grid_thw"].to(device)
                out = model.model.get_video_features(batch["pixel_values_videos"].to(device), grid, return_dict=True)
                feats = torch.cat(out.pooler_output).float()
                groups = int(grid[0, 0])
                pooled.append(feats.view(groups, -1, feats.shape[-1]).mean(dim=1))
            ids = processor.tokenizer(question, return_tensors="pt")["input_ids"].to(device)
            query = model.get_input_embeddings()(ids)[0].float().mean(dim=0)
        return torch.cat(pooled).cpu(), query.cpu()

    return score


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
