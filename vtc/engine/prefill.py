"""Prefill compaction: run the select and prefill steps on each sample's visual rows, then keep the chosen
rows of the language model's inputs, its position ids and padding mask (re-left-padding the batch), so
kept tokens keep their original (M-)RoPE ids."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from transformers import DynamicCache

from ..sequence import Compaction, new_rows, text_after_video, text_positions
from ..stats import CompressionStats, per_copy, sorted_list
from ..tokens import VisualTokens
from .state import Expansion, ForwardState, args_kwargs
from .steps import run_step


class PrefillCompaction:
    """The prefill stage of one engine (``engine`` gives the model, its adapter, the steps and budget)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.adapter = engine.adapter
        self.steps = engine.pipeline.of_stage("prefill")

    def needs(self, what: str) -> bool:
        return any(what in step.method.needs for step in self.steps)

    def run(
        self, captured: dict, kwargs: dict, expansion: Expansion | None
    ) -> tuple[ForwardState, tuple[tuple, dict] | None]:
        """The state of this forward and the language model's new arguments (None: unchanged)."""
        kwargs, created_cache = self._with_cache(kwargs)
        embeds, mask = kwargs["inputs_embeds"], kwargs.get("attention_mask")
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = self._default_positions(embeds)
        copies = 1
        if expansion is not None and expansion.matches(captured):
            # layouts and pixels come from the inputs the caller passed, one row per sample
            captured, copies = {**captured, **expansion.inputs}, expansion.factor
        # Copies of a sample are identical rows: decide once per sample, on its first copy, and repeat.
        tokens, visual, stats, links = self._sample_tokens(
            captured, embeds[::copies], None if mask is None else mask[::copies], copies
        )
        tokens = [replace(tok) for tok in per_copy(tokens, copies)]
        visual = visual.repeat_interleave(copies, dim=0)
        representative = [_positions_of(tok, n) for tok, n in zip(tokens, stats.visual_tokens)]
        replaced = False
        if links is not None:  # the vision stage merged inside the tower: the features are already in embeds
            representative = [_through(rep, link) for rep, link in zip(representative, per_copy(links, copies))]
        for step in self.steps:
            tokens, merged, moves = run_step(step, tokens, stats, self.engine.budget, layer=None, copies=copies)
            replaced |= merged
            representative = [_follow(rep, move) for rep, move in zip(representative, moves)]
        if replaced or links is not None:
            stats.merged_into = [_original_index(rep, tok) for rep, tok in zip(representative, tokens)]
        if replaced:
            embeds = embeds.clone()
            for b, tok in enumerate(tokens):
                embeds[b, tok.index] = tok.features.to(embeds.dtype)
        kept = ~visual
        for b, tok in enumerate(tokens):
            kept[b, tok.index] = True
        compaction = Compaction.from_kept(kept)
        stats.kept_indices = [sorted_list(t.source) for t in tokens]
        self.engine.model.vtc_stats = stats
        rewrite = replaced or not compaction.identity
        new_mask = compaction.mask_2d(mask) if rewrite else (mask if mask is not None else compaction.valid.long())
        for b, tok in enumerate(tokens):
            tok.index = new_rows(compaction, tok.index, b)
        state = ForwardState(
            cache=kwargs.get(self.engine.cache_key), orig_len=kept.shape[1], prefill=compaction, rewritten=rewrite,
            n_dropped=(~kept).sum(dim=1), mask_2d=new_mask, visual=tokens, copies=copies,
            entered=[len(tok) for tok in tokens],
        )
        if not rewrite:
            return state, (args_kwargs(kwargs) if created_cache else None)
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = compaction.rows(embeds)
        kwargs["attention_mask"] = new_mask
        kwargs["position_ids"] = self._compact_positions(positions, compaction, new_mask)
        self.adapter.compact_lm_kwargs(kwargs, compaction.gather, compaction.valid, kept)
        return state, args_kwargs(kwargs)

    def _sample_tokens(
        self, captured: dict, embeds: torch.Tensor, mask: torch.Tensor | None, copies: int
    ) -> tuple[list[VisualTokens], torch.Tensor, CompressionStats, list[torch.Tensor] | None]:
        """Each sample's visual tokens, after the select and vision stages, with stats already per
        language-model row, and (vision stage) each original token's representative among them.

        ``embeds`` and ``mask`` hold one row per sample (the first of its ``copies``); ``captured`` holds
        the inputs the caller passed.
        """
        input_ids = captured["input_ids"].to(embeds.device)
        placeholders = input_ids == self.adapter.visual_token_id()
        if mask is not None:
            placeholders &= mask.bool()
        layouts = self.adapter.layouts(captured, placeholders)
        # Only the rows a layout lists are offered to methods; other placeholder rows (LLaVA-OneVision's
        # newline, Video-LLaVA's per-frame [CLS]) are kept like text.
        visual = torch.zeros_like(placeholders)
        for b, lay in enumerate(layouts):
            visual[b, lay.rows] = True
        row_layouts = per_copy(layouts, copies)
        stats = CompressionStats(
            visual_tokens=[int(lay.rows.numel()) for lay in row_layouts], num_layers=self.engine.num_layers
        )
        stats.notes += [f"sample {row}: {note}" for row, lay in enumerate(row_layouts) for note in lay.notes]
        tokens = [
            VisualTokens(
                features=embeds[b, lay.rows], coords=lay.coords, frame=lay.frame, time=lay.time, index=lay.rows,
                grid=lay.grid, source=torch.arange(lay.rows.numel(), device=embeds.device),
            )
            for b, lay in enumerate(layouts)
        ]
        if self.needs("query"):
            for b, tok in enumerate(tokens):
                tok.question = question_rows(embeds[b], visual[b], None if mask is None else mask[b])
                tok.query = tok.question.mean(dim=0)
        if self.needs("pixels"):
            pixels = self.adapter.pixels(captured, [len(t) for t in tokens])
            if pixels is None:
                raise ValueError("this method needs the raw video pixels (pixel_values_videos), which were not passed")
            for tok, pix in zip(tokens, pixels):
                tok.pixels = pix
        select = self.engine.select
        if select is not None:
            tokens = select.apply(tokens, embeds, visual, stats, captured, copies)
        else:
            _copy_processor_selection(self.engine.model, captured, stats, copies)
        if captured.get("vision_saliency") and self.needs("vision_saliency"):
            _attach_vision_saliency(tokens, captured["vision_saliency"], [int(lay.rows.numel()) for lay in layouts])
        links = None
        if self.engine.vision is not None:
            tokens, links = self.engine.vision.apply(tokens, [int(lay.rows.numel()) for lay in layouts], stats, copies)
        return tokens, visual, stats, links

    def _with_cache(self, kwargs: dict) -> tuple[dict, bool]:
        """Create the KV cache the language model would create itself, so decode steps can be recognised.

        A plain ``model(**inputs, use_cache=True)`` reaches the language model without a cache; the
        one it makes inside would be unknown to vtc, and a hand-written decode loop on it would not
        get its mask and positions mapped onto the shorter cache.
        """
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(self.adapter.text_config(), "use_cache", False)
        if kwargs.get(self.engine.cache_key) is not None or not use_cache:
            return kwargs, False
        return {**kwargs, self.engine.cache_key: DynamicCache(config=self.adapter.text_config())}, True

    def _default_positions(self, embeds: torch.Tensor) -> torch.Tensor:
        """The ids a 1D-RoPE language model computes itself when given none (0..L-1, padding included).

        Made explicit so kept tokens keep them after the shorter sequence is built; M-RoPE families
        always compute theirs in the base model, so a missing one there means something is wrong.
        """
        if self.adapter.rope != "1d":
            raise ValueError("vtc needs the model's M-RoPE position ids at the language model; none were computed")
        batch, length = embeds.shape[:2]
        return torch.arange(length, device=embeds.device).expand(batch, length)

    def _compact_positions(
        self, positions: torch.Tensor, compaction: Compaction, new_mask: torch.Tensor
    ) -> torch.Tensor:
        if positions.ndim == 2:
            return compaction.rows(positions.expand(compaction.gather.shape[0], -1))
        out = compaction.rows(positions, seq_dim=2)
        if self.adapter.has_text_position_row(out):
            out = out.clone()
            out[0] = text_positions(new_mask)
        return out


def question_rows(embeds: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Input embeddings [L, D] of one sample's text after its last visual row (the question and prompt tail).

    Methods that declare ``needs={"query"}`` get these as ``question`` and their mean as ``query``.
    """
    text = text_after_video(embeds, visual, mask)
    if not len(text):
        raise ValueError("this method needs the question, but no text follows the video in the prompt")
    return text


def _attach_vision_saliency(tokens: list[VisualTokens], per_video: list[torch.Tensor], full_sizes: list[int]) -> None:
    """Give each sample its videos' saliency over all of its original visual tokens (videos are in
    prompt order). When a select stage encoded only the chosen frames, those fill the kept rows."""
    flat = torch.cat(per_video).to(tokens[0].features.device)
    sizes = [len(t) for t in tokens]
    if flat.numel() == sum(full_sizes):
        parts = flat.split(full_sizes)
    elif flat.numel() == sum(sizes):
        parts = []
        for tok, part, full in zip(tokens, flat.split(sizes), full_sizes):
            whole = part.new_zeros(full)
            whole[tok.source] = part
            parts.append(whole)
    else:
        raise ValueError(
            f"the vision tower reported saliency for {flat.numel()} video tokens but the prompts hold {sum(full_sizes)}"
        )
    for tok, part in zip(tokens, parts):
        tok.vision_saliency = part[tok.source]


def _copy_processor_selection(model: Any, captured: dict, stats: CompressionStats, copies: int) -> None:
    """Frames chosen by vtc.VideoProcessor for these inputs (select stage before the processor) go to the stats,
    repeated for each of generate()'s ``copies`` of a sample."""
    from ..processor import processor_selection

    record = processor_selection(model, captured)
    if record is not None:
        stats.record_selection(record.selected_frames, record.selected_times, record.scenes, copies)


def _positions_of(tokens: VisualTokens, num_visual: int) -> torch.Tensor:
    """[num_visual] each original visual token's row among ``tokens`` (-1: a select stage already dropped it)."""
    out = torch.full((num_visual,), -1, dtype=torch.long, device=tokens.source.device)
    out[tokens.source] = torch.arange(len(tokens), device=tokens.source.device)
    return out


def _through(representative: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
    """Each original token's row among the tokens, following the vision stage's ``link`` (original token ->
    original token its features went into, -1: dropped)."""
    return torch.where(link >= 0, representative[link.clamp(min=0)], -1)


def _follow(representative: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
    """Carry each original token's representative row through one step's ``move`` (row -> row or -1)."""
    if move.numel() == 0:
        return representative
    return torch.where(representative >= 0, move.to(representative.device)[representative.clamp(min=0)], -1)


def _original_index(representative: torch.Tensor, tokens: VisualTokens) -> list[int]:
    """Representative rows among the final ``tokens`` as original visual-token indices (-1 stays -1)."""
    if len(tokens) == 0:
        return [-1] * representative.numel()
    return torch.where(representative >= 0, tokens.source[representative.clamp(min=0)], -1).tolist()
