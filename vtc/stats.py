"""What each stage kept and what it cost, recorded after every forward as ``model.vtc_stats``."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass
class StageRecord:
    """One method's effect on one forward: per-sample token counts before/after and time spent."""

    method: str
    stage: str
    layer: int | None
    tokens_before: list[int]
    tokens_after: list[int]
    ms: float
    notes: list[str] = field(default_factory=list)


@dataclass
class CacheStep:
    """One decode step of a cache-stage method: per language-model row, how many visual tokens layers from
    ``layer`` on attended to, whether the method chose them anew at this step, and (for rows that did)
    which ones, as indices among the row's visual tokens that entered the LLM (empty when carried over).
    ``kv_lengths[k][i]``: the KV-cache entries layer k (from ``layer`` on) attended to for row i at this step
    (text, chosen visual tokens that layer still holds, decoded tokens including this one; padding left out)."""

    layer: int
    kept: list[int]
    reselected: list[bool]
    chosen: list[list[int]]
    kv_lengths: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class CompressionStats:
    """Per-forward record of compression.

    ``kept_indices[i]`` lists, sorted and 0-based among sample i's visual tokens, those that
    entered the LLM (after every prefill-stage method). ``layer_kept_indices[k][i]`` does the same
    for the tokens that continued past layer k. ``visual_tokens[i]`` is sample i's count before
    compression. ``merged_into[i]`` (empty unless a prefill-stage method merged) gives, for each of
    sample i's original visual tokens, the original index of the kept token that carries its
    features into the LLM: itself when kept, -1 when dropped outright (methods that replace features
    without a hard assignment, the trained resampler and VQ codebook, map only their kept tokens).
    ``flop_retention`` is the FLOP-equivalent retention: the mean over LLM layers of the fraction
    of visual tokens each layer processes (the definition HoliTom/FlashVID report).
    """

    visual_tokens: list[int] = field(default_factory=list)
    kept_indices: list[list[int]] = field(default_factory=list)
    layer_kept_indices: dict[int, list[list[int]]] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    num_layers: int = 0
    notes: list[str] = field(default_factory=list)
    # select stage (vtc/select): per sample, the frames the model input was built from, the times
    # of the kept frame groups (seconds) and where scenes start (``scenes`` selector)
    selected_frames: list[list[int]] = field(default_factory=list)
    selected_times: list[list[float]] = field(default_factory=list)
    scenes: list[list[int]] = field(default_factory=list)
    merged_into: list[list[int]] = field(default_factory=list)
    # cache stage: one record per decode step
    cache_steps: list[CacheStep] = field(default_factory=list)

    def record_selection(
        self, frames: list[list[int]], times: list[list[float]], scenes: list[list[int]], copies: int
    ) -> None:
        """The select stage's choice per sample, repeated for each of generate()'s ``copies`` of a sample."""
        self.selected_frames = per_copy(frames, copies)
        self.selected_times = per_copy(times, copies)
        self.scenes = per_copy(scenes, copies)

    @property
    def tokens_kept(self) -> list[int]:
        return [len(k) for k in self.kept_indices]

    @property
    def retention(self) -> float:
        """Fraction of visual tokens that entered the LLM, over the batch."""
        total = sum(self.visual_tokens)
        return sum(self.tokens_kept) / total if total else 1.0

    @property
    def flop_retention(self) -> float:
        total = sum(self.visual_tokens)
        if not total or not self.num_layers:
            return self.retention
        per_layer = []
        current = sum(self.tokens_kept)
        cuts = {k: sum(len(s) for s in v) for k, v in self.layer_kept_indices.items()}
        for layer in range(self.num_layers):
            current = cuts.get(layer, current)
            per_layer.append(current / total)
        return sum(per_layer) / len(per_layer)

    def sample_flop_retention(self, sample: int) -> float:
        """``flop_retention`` of one sample (row) of the batch."""
        total = self.visual_tokens[sample]
        current = len(self.kept_indices[sample])
        if not total or not self.num_layers:
            return current / total if total else 1.0
        shares = []
        for layer in range(self.num_layers):
            if layer in self.layer_kept_indices:
                current = len(self.layer_kept_indices[layer][sample])
            shares.append(current / total)
        return sum(shares) / len(shares)

    @property
    def ms_per_stage(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rec in self.stages:
            key = rec.method if rec.layer is None else f"{rec.method}@{rec.layer}"
            out[key] = out.get(key, 0.0) + rec.ms
        return out

    def to_dict(self) -> dict:
        data = asdict(self)
        data["layer_kept_indices"] = {str(k): v for k, v in self.layer_kept_indices.items()}
        data.update(
            tokens_kept=self.tokens_kept,
            retention=self.retention,
            flop_retention=self.flop_retention,
            ms_per_stage=self.ms_per_stage,
        )
        return data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """A small human-readable table: one row per stage, tokens summed over the batch."""
        rows = [("stage", "method", "tokens in", "tokens out", "ms")]
        for rec in self.stages:
            where = rec.stage if rec.layer is None else f"{rec.stage}@{rec.layer}"
            rows.append((where, rec.method, str(sum(rec.tokens_before)), str(sum(rec.tokens_after)), f"{rec.ms:.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(
            f"visual tokens {sum(self.visual_tokens)} -> {sum(self.tokens_kept)} entering the LLM "
            f"(retention {self.retention:.3f}, FLOP-equivalent {self.flop_retention:.3f})"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"note ({rec.method}): {n}" for rec in self.stages for n in rec.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def sorted_list(indices: torch.Tensor) -> list[int]:
    return torch.sort(indices.flatten()).values.tolist()


def per_copy(per_sample: list[T], copies: int) -> list[T]:
    """One entry per language-model row when generate() runs ``copies`` consecutive copies of each sample
    (beam search, several returned sequences): stats are indexed like the rows the language model runs."""
    return [item for item in per_sample for _ in range(copies)]
