"""Per-sample compression records for harness runs: visual tokens in and kept, and prefill time.

A harness calls ``model.generate`` on batches it builds itself, so the recorder hooks the model
rather than the harness: a forward pre-hook and hook time the first forward of each generate()
(the prefill, vision encoder included) and read ``model.vtc_stats`` right after it, while every
stage's result is still the current one. ``expect(keys)`` names the samples of the next batch.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vtc


@dataclass
class SampleRecord:
    """One sample of one generate() call.

    ``tokens_kept`` counts the visual tokens that survived every stage (past the deepest layer cut
    of a layer-stage method), ``tokens_entering_llm`` those left after the prefill stage (vtc's
    ``retention``); ``flop_retention`` is the batch's FLOP-equivalent retention.
    ``prefill_ms`` is the batch's prefill wall time divided by the batch size (with batch size 1,
    the sample's own prefill). ``stage_ms`` is the same share of the time each vtc stage took.
    """

    key: Any
    visual_tokens: int
    tokens_kept: int
    tokens_entering_llm: int
    flop_retention: float
    prefill_ms: float
    batch_size: int
    stage_ms: dict[str, float] = field(default_factory=dict)


class StatsRecorder:
    """Hooks ``model`` to turn each generate() of a batch announced with ``expect`` into SampleRecords."""

    def __init__(self, model: nn.Module, video_token_id: int | None) -> None:
        self.model = model
        self.video_token_id = video_token_id
        self.records: list[SampleRecord] = []
        self._pending: list[Any] = []
        self._start: float | None = None
        self._visual: list[int] = []
        self._handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    def expect(self, keys: list[Any]) -> None:
        """The next prefill's batch holds these samples (appended to those announced before), in batch order."""
        self._pending.extend(keys)

    def take(self) -> list[SampleRecord]:
        """Records since the last call (and forget them)."""
        records, self.records = self.records, []
        return records

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self._pending or self._start is not None:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or self.video_token_id is None:
            self._visual = [0] * len(self._pending)
        else:
            visual = input_ids == self.video_token_id
            mask = kwargs.get("attention_mask")
            if mask is not None:
                visual &= mask.bool()
            self._visual = visual.sum(dim=1).tolist()
        _synchronize(input_ids)
        self._start = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._start is None:
            return
        _synchronize(getattr(output, "logits", None))
        ms = (time.perf_counter() - self._start) * 1000.0
        keys, self._pending, self._start = self._pending, [], None
        if len(keys) != len(self._visual):
            raise RuntimeError(f"expected a batch of {len(keys)} samples, the prefill saw {len(self._visual)}")
        stats = getattr(module, "vtc_stats", None) if vtc.is_wrapped(module) else None
        share = 1.0 / len(keys) if keys else 0.0
        if stats is None:
            entering, survived, flop, stage_ms = self._visual, self._visual, 1.0, {}
        else:
            entering = stats.tokens_kept
            survived = [len(k) for k in stats.layer_kept_indices[max(stats.layer_kept_indices)]] \
                if stats.layer_kept_indices else entering
            flop, stage_ms = stats.flop_retention, {k: v * share for k, v in stats.ms_per_stage.items()}
        for key, visual, kept, enter in zip(keys, self._visual, survived, entering):
            self.records.append(SampleRecord(
                key, int(visual), int(kept), int(enter), float(flop), ms * share, len(keys), dict(stage_ms)
            ))


def _synchronize(tensor: torch.Tensor | None) -> None:
    if tensor is not None and tensor.device.type == "cuda":
        torch.cuda.synchronize(tensor.device)


def append_jsonl(path: str | Path, records: list[SampleRecord], **extra: Any) -> None:
    """Append records (plus ``extra`` fields, e.g. the compression in force) to a JSON-lines side file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        for record in records:
            handle.write(json.dumps({**extra, **asdict(record)}) + "\n")
