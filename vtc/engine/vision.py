"""The vision stage inside ``vtc.wrap``: a method that acts inside the vision encoder.

The family adapter hooks its tower (``FamilyAdapter.install_vision_stage``) and, while a video is
encoded, hands this stage each video's tokens at the method's layer: the tower's hidden states per
language-model token, its attention saliency and keys. The method decides what to keep and merge; the
adapter runs the rest of the tower on what is kept (where the tower allows, so the encoder's own cost
falls) and returns full-length features so transformers' placeholder check passes. At the prefill hook
the rows the method dropped leave the sequence; kept rows keep their position ids, and a merged
token takes its target's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..budget import Budget
from ..stats import CompressionStats, StageRecord, per_copy
from ..tokens import Selection, VisualTokens
from .steps import clock

# Prefill methods that read the tower's own saliency (recorded at its last block) would read a shortened tower.
READS_TOWER = "vision_saliency"


@dataclass
class VideoCut:
    """What the vision step decided for one encoded video: per token, its representative token (itself when
    kept, its target when merged, -1 when dropped), plus the method's notes and time."""

    representative: torch.Tensor
    notes: list[str]
    ms: float


class VisionStage:
    """Owns the vision step of one engine: the adapter's tower hooks and the row selection at prefill."""

    def __init__(self, engine: Any, steps: list) -> None:
        if len(steps) != 1:
            raise ValueError(f"a pipeline takes one vision-stage method, got {[s.method.name for s in steps]}")
        adapter = engine.adapter
        if not adapter.vision_stage:
            raise NotImplementedError(f"the {adapter.family} adapter cannot run vision-stage methods: {adapter.vision_refusal}")
        readers = [s.method.name for s in engine.pipeline.of_stage("prefill") if READS_TOWER in s.method.needs]
        if readers:
            raise ValueError(
                f"{readers} read the vision tower's last-block saliency, which a vision-stage method has already "
                "shortened; run them without it"
            )
        self.engine, self.step = engine, steps[0]
        self.method = self.step.method
        self.budget: Budget = self.method.resolve_budget(self.step.budget or engine.budget)
        self.cuts: list[VideoCut] = []

    @property
    def active(self) -> bool:
        """True while the model encodes a video (the same tower may also encode images, left alone)."""
        return self.engine._encoding_video

    def install(self) -> list[Callable[[], None]]:
        return self.engine.adapter.install_vision_stage(self)

    def start_encoding(self) -> None:
        """Forget decisions of an encoding no prefill consumed: one encoding feeds one prefill."""
        self.cuts = []

    def compress(self, videos: list[VisualTokens], notes: list[str]) -> list[Selection]:
        """Run the method on each video the tower is encoding; called by the adapter's hooks."""
        out = []
        for tokens in videos:
            start = clock([tokens])
            selection = self.method.compress(tokens, self.budget)
            rep = torch.full((len(tokens),), -1, dtype=torch.long, device=tokens.features.device)
            moves = selection.positions(len(tokens))
            rep[moves >= 0] = selection.keep[moves[moves >= 0]]
            self.cuts.append(VideoCut(rep, notes + selection.notes, (clock([tokens]) - start) * 1000.0))
            out.append(selection)
        return out

    def record(self, representatives: list[torch.Tensor], notes: list[str], ms: float) -> None:
        """What a method that acts across the tower's blocks (DyMU) decided, per encoded video: each token's
        representative among the video's tokens (itself when kept, -1 when dropped)."""
        for video, rep in enumerate(representatives):
            self.cuts.append(VideoCut(rep, notes, ms if video == 0 else 0.0))

    def apply(
        self, tokens: list[VisualTokens], full_sizes: list[int], stats: CompressionStats, copies: int
    ) -> tuple[list[VisualTokens], list[torch.Tensor]]:
        """Keep the rows the vision step kept in each sample (``full_sizes``: its visual tokens before any
        select stage); returns the tokens and, per sample, each original visual token's representative
        among the original tokens (-1: dropped), from which the stats' ``merged_into`` is built."""
        cuts, self.cuts = self.cuts, []
        flat, start = [], 0  # representatives as indices into all encoded video tokens
        for cut in cuts:
            flat.append(torch.where(cut.representative >= 0, cut.representative + start, -1))
            start += cut.representative.numel()
        flat = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.long)
        sizes = [len(t) for t in tokens]
        # The tower saw every token, or (a select stage encoded only the frames it chose) the kept ones in order.
        encoded_all = flat.numel() == sum(full_sizes)
        if not encoded_all and flat.numel() != sum(sizes):
            raise ValueError(
                f"the vision stage saw {flat.numel()} video tokens but the prompts hold {sum(full_sizes)}: "
                "vtc will not guess which token belongs to which prompt"
            )
        out, links, offset = [], [], 0
        for tok, full in zip(tokens, full_sizes):
            link = torch.full((full,), -1, dtype=torch.long, device=tok.source.device)
            if encoded_all:
                rep = flat[offset : offset + full].to(link.device) - offset
                local = torch.where(rep >= 0, rep, -1)[tok.source]
                offset += full
            else:
                rep = flat[offset : offset + len(tok)].to(link.device) - offset
                offset += len(tok)
                local = torch.where(rep >= 0, tok.source[rep.clamp(min=0)], -1)
            link[tok.source] = local
            out.append(tok.subset((local == tok.source).nonzero().flatten()))
            links.append(link)
        stats.stages.append(StageRecord(
            method=self.method.name, stage="vision", layer=None,
            tokens_before=per_copy(sizes, copies), tokens_after=per_copy([len(t) for t in out], copies),
            ms=sum(c.ms for c in cuts), notes=[f"video {v}: {n}" for v, c in enumerate(cuts) for n in c.notes],
        ))
        return out, links
