"""The select stage inside ``vtc.wrap``: choose frame groups from the processed pixels.

On families whose adapter can encode a subset of frame groups (``select_stage = "encoder"``: the
Qwen VL line and SmolVLM), a pixel-only selector scores the groups from thumbnails of the pixel patches when
the model encodes the video (``get_video_features``) and only the chosen groups go through the
vision tower; the others get zero features so transformers' placeholder check passes, and the
prefill hook drops their rows. Kept rows keep the position ids the model gave them, which are
the ids of those frames at their true times. A selector that needs the question or real times
(``query``, ``keyclips`` with query relevance, ``fps``) cannot decide before the prompt is known,
so every group is encoded and it decides at the prefill hook: it saves LLM tokens, not encoder time.
Families with ``select_stage = "prefill"`` always decide there, from thumbnails of the frames the
model received; their frame markers and timestamps are text and stay in the prompt.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

import torch
from torch import nn

from ..budget import Budget
from ..patching import patch_attribute
from ..sequence import text_after_video
from ..stats import CompressionStats, StageRecord, per_copy
from ..tokens import VisualTokens
from .base import Frames, Plan, Selector, UnitCost

DECIDE_AFTER_ENCODER = frozenset({"query", "times"})


class SelectStage:
    """Owns the select step of one engine: the encoder wrapper and the row selection at prefill."""

    def __init__(self, engine: Any, steps: list) -> None:
        if len(steps) != 1:
            raise ValueError(f"a pipeline takes one select-stage method, got {[s.method.name for s in steps]}")
        where = engine.adapter.select_stage
        if where not in ("encoder", "prefill"):
            raise NotImplementedError(f"the {engine.adapter.family} adapter cannot run select-stage methods yet")
        self.engine, self.step = engine, steps[0]
        self.selector: Selector = self.step.method
        self.at_encoder = where == "encoder"
        self.early = self.at_encoder and not (self.selector.needs & DECIDE_AFTER_ENCODER)
        self.thumbs: list[torch.Tensor] = []
        self.plans: list[Plan] | None = None
        self.encode_ms = 0.0

    def budget(self) -> Budget:
        return self.selector.resolve_budget(self.step.budget or self.engine.budget)

    def install(self, base: nn.Module) -> Callable[[], None]:
        """Wrap the adapter's video encoder (an instance attribute; the engine's recorder wraps this one)."""
        if not self.at_encoder:
            return lambda: None
        adapter = self.engine.adapter
        name = adapter.video_encoder
        original = getattr(base, name)

        @functools.wraps(original)
        def encode(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.thumbs = adapter.select_thumbnails(args, kwargs)
            self.plans = None
            if not self.early:
                return original(*args, **kwargs)
            plans = [self._plan(thumbs, None) for thumbs in self.thumbs]
            self.plans = plans
            self.encode_ms = (time.perf_counter() - start) * 1000.0
            return adapter.encode_selected(original, [p.keep for p in plans], args, kwargs)

        return patch_attribute(base, name, encode)

    def _plan(self, thumbs: torch.Tensor, tokens: VisualTokens | None, query: torch.Tensor | None = None) -> Plan:
        units, sub = thumbs.shape[0], thumbs.shape[1]
        per_unit = thumbs.shape[-1] * thumbs.shape[-2]
        device = thumbs.device
        if tokens is not None:
            rows = _unit_rows(tokens, units)
            times = torch.stack([tokens.time[r[0]].float() if r.numel() else torch.tensor(float(u), device=device)
                                 for u, r in enumerate(rows)])
            features = torch.stack([tokens.features[r].float().mean(dim=0) if r.numel()
                                    else tokens.features.new_zeros(tokens.features.shape[1]).float() for r in rows])
        else:
            times, features = torch.arange(units, device=device, dtype=torch.float32), None
        frames = Frames(
            thumbs=thumbs, times=times.to(device),
            indices=torch.arange(units * sub, device=device).view(units, sub),
            keyframe=torch.zeros(units, dtype=torch.bool, device=device),
            features=features, query=query,
        )
        cost = UnitCost(tokens_at=lambda scale: per_unit, scales=(1.0,), shares=True)
        plan = self.selector.plan(frames, self.budget(), cost)
        if plan.scale != 1.0:
            raise RuntimeError(f"{self.selector.name} planned scale {plan.scale} where only full resolution exists")
        return plan

    def apply(self, tokens: list[VisualTokens], embeds: torch.Tensor, visual: torch.Tensor,
              stats: CompressionStats, captured: dict[str, Any], copies: int) -> list[VisualTokens]:
        """Keep the rows of the chosen groups (and token shares) of each sample, record the selection in
        ``stats`` once per language-model row (generate() may run ``copies`` rows of each sample)."""
        start = time.perf_counter()
        samples = [b for b, tok in enumerate(tokens) if len(tok)]
        notes = []
        if not self.at_encoder:
            self.thumbs = self.engine.adapter.frame_thumbnails(captured, [tokens[b].grid[0] for b in samples])
            notes.append(f"{self.engine.adapter.family} selects at the language model: every frame was encoded")
        if len(samples) != len(self.thumbs):
            raise ValueError(
                f"the select stage supports one video per prompt; got {len(self.thumbs)} videos "
                f"for {len(samples)} prompts with video"
            )
        out = list(tokens)
        selected_frames: list[list[int]] = [[] for _ in tokens]
        selected_times: list[list[float]] = [[] for _ in tokens]
        scenes: list[list[int]] = [[] for _ in tokens]
        for video, b in enumerate(samples):
            tok = tokens[b]
            thumbs = self.thumbs[video].to(tok.features.device)
            if self.plans is not None:
                plan = self.plans[video]
            else:
                plan = self._plan(thumbs, tok, _question_embedding(embeds[b], visual[b]))
            keep = _kept_rows(tok, plan, thumbs.shape[0])
            out[b] = tok.subset(keep)
            sub = thumbs.shape[1]
            selected_frames[b] = [int(u) * sub + s for u in plan.keep.tolist() for s in range(sub)]
            selected_times[b] = [float(t) for t in _unit_times(tok, plan.keep, thumbs.shape[0])]
            scenes[b] = list(plan.scenes or [])
            notes += [f"sample {row}: {n}" for row in range(b * copies, (b + 1) * copies) for n in plan.notes]
        stats.record_selection(selected_frames, selected_times, scenes, copies)
        stats.stages.append(StageRecord(
            method=self.selector.name, stage="select", layer=None,
            tokens_before=per_copy([len(t) for t in tokens], copies),
            tokens_after=per_copy([len(t) for t in out], copies),
            ms=self.encode_ms + (time.perf_counter() - start) * 1000.0, notes=notes,
        ))
        self.plans, self.thumbs, self.encode_ms = None, [], 0.0
        return out


def _unit_rows(tok: VisualTokens, units: int) -> list[torch.Tensor]:
    """Rows of each frame group 0..units-1; empty where a group has none (VideoLLaMA3's own token
    compression can leave a static frame without tokens)."""
    return [torch.nonzero(tok.frame == u).flatten() for u in range(units)]


def _unit_times(tok: VisualTokens, keep: torch.Tensor, units: int) -> list[float]:
    rows = _unit_rows(tok, units)
    return [float(tok.time[rows[u][0]]) if rows[u].numel() else float(u) for u in keep.tolist()]


def _kept_rows(tok: VisualTokens, plan: Plan, units: int) -> torch.Tensor:
    """Rows of the kept groups; a group with share s keeps round(s * n) rows evenly strided in raster order."""
    frames = _unit_rows(tok, units)
    parts = []
    shares = plan.share.tolist() if plan.share is not None else [1.0] * plan.keep.numel()
    for unit, share in zip(plan.keep.tolist(), shares):
        rows = frames[unit]
        if not rows.numel():
            continue
        count = max(1, min(rows.numel(), round(share * rows.numel())))
        if count < rows.numel():
            rows = rows[torch.linspace(0, rows.numel() - 1, count, device=rows.device).round().long().unique()]
        parts.append(rows)
    return torch.sort(torch.cat(parts)).values if parts else tok.frame.new_zeros(0)


def _question_embedding(embeds: torch.Tensor, visual: torch.Tensor) -> torch.Tensor | None:
    """Mean input embedding of the text after the video (the question and the chat template's tail); None
    when the video ends the prompt (the selector then plans without a question)."""
    text = text_after_video(embeds, visual)
    return text.float().mean(dim=0) if len(text) else None
