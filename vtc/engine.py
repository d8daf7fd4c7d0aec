"""The two generic hooks (prefill stage and layer stage) that apply a Pipeline to a wrapped model.

Prefill: a forward pre-hook on the language model sees ``inputs_embeds`` with the visual features
scattered in, the full position ids and the padding mask; it keeps the chosen rows of all three
(re-left-padding the batch), so kept tokens keep their original (M-)RoPE ids. During decoding it
maps generate()'s full-length padding mask onto the shorter KV cache.

Layer: a pre-hook on decoder layer K trims hidden states, rotary cos/sin, positions and the mask
using the last prompt token's attention recorded at layer K-1; later layers get the trimmed
versions. The KV cache keeps full length below K and the short length from K on.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn
from transformers import DynamicCache

from . import attention
from .budget import Budget
from .patching import patch_attribute
from .pipeline import Pipeline, Step
from .sequence import Compaction, new_rows, text_after_video, text_positions
from .stats import CompressionStats, StageRecord, per_copy, sorted_list
from .tokens import VisualTokens


@dataclass
class _Cut:
    layer: int
    composed: Compaction  # relative to the layout that entered the LLM


@dataclass
class _Expansion:
    """generate()'s copies of each prompt (beam search, several returned sequences).

    generate() encodes the videos of the caller's batch once, then repeats every row ``factor``
    times (rows b*factor .. b*factor+factor-1 are sample b) before the prefill forward.
    """

    factor: int
    inputs: dict[str, torch.Tensor]  # every tensor generate() expanded, as it was before (input_ids included)

    def matches(self, captured: dict[str, Any]) -> bool:
        """Whether this prefill runs the recorded copies (a generate() that failed between expanding and
        its prefill leaves a record that belongs to no forward)."""
        ids, original = captured["input_ids"], self.inputs.get("input_ids")
        return original is not None and torch.equal(ids, original.to(ids.device).repeat_interleave(self.factor, dim=0))


@dataclass
class _Forward:
    """One prefill and the decode steps that follow it on the same cache."""

    cache: Any
    orig_len: int
    prefill: Compaction
    rewritten: bool
    n_dropped: torch.Tensor
    mask_2d: torch.Tensor  # padding mask of the layout that entered the LLM
    visual: list[VisualTokens]  # per row, ``index`` = rows in the current layout
    copies: int  # consecutive rows that are generate()'s copies of one sample (1 without expansion)
    phase: str = "prefill"
    cuts: list[_Cut] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    layer_mask_2d: torch.Tensor | None = None
    recorded: dict[int, torch.Tensor] = field(default_factory=dict)


class Engine:
    """Owns every hook vtc puts on one model; ``remove`` restores the model exactly."""

    def __init__(self, model: nn.Module, adapter: Any, pipeline: Pipeline, budget: Budget) -> None:
        self.model, self.adapter, self.pipeline, self.budget = model, adapter, pipeline, budget
        self.prefill_steps = pipeline.of_stage("prefill")
        self.layer_steps = pipeline.of_stage("layer")
        unsupported = [s.method.name for s in pipeline.steps if s.method.stage not in ("select", "prefill", "layer")]
        if unsupported:
            raise NotImplementedError(
                f"methods {unsupported} act at a stage this version of vtc cannot hook yet (select, prefill and layer only)"
            )
        pipeline.resolve_budgets(budget)  # a step left without a budget fails here, not at the first forward
        if self.layer_steps and not adapter.supports_layer_stage:
            raise NotImplementedError(
                f"the {adapter.family} adapter does not support layer-stage methods "
                f"({', '.join(s.method.name for s in self.layer_steps)}); use prefill-stage methods"
            )
        self.select = select_stage(self, pipeline.of_stage("select"))
        self.num_layers = len(adapter.decoder_layers())
        for step in self.layer_steps:
            if not 1 <= step.method.layer < self.num_layers:
                raise ValueError(
                    f"{step.method.name} acts at layer {step.method.layer}, but it needs the attention of the layer "
                    f"before, so it must be in 1..{self.num_layers - 1} for this model"
                )
        self.state: _Forward | None = None
        self._captured: dict[str, Any] | None = None
        self._encoded_video: dict[str, Any] = {}
        self._encoding_video = False
        self._expansion: _Expansion | None = None
        self._removers: list[Callable[[], None]] = []
        self._cache_key = cache_kwarg(adapter.language_model())

    # -- installation --------------------------------------------------------------------------------
    def install(self) -> None:
        """Add every hook; if one fails, remove those already added, so a failed wrap leaves the model as it was."""
        try:
            self._install_hooks()
        except BaseException:
            self.remove()
            raise

    def _install_hooks(self) -> None:
        base, lm = self.adapter.base_model(), self.adapter.language_model()
        self._removers.append(base.register_forward_pre_hook(self._capture, with_kwargs=True).remove)
        if self.select is not None:
            self._removers.append(self.select.install(base))
        self._removers.append(self._record_video_encoding(base))
        self._removers.append(self._record_expansion(self.model))
        self._removers.append(lm.register_forward_pre_hook(self._language_model_pre_hook, with_kwargs=True).remove)
        if self.layer_steps:
            self._install_layer_stage()
        if self._prefill_needs("vision_saliency"):
            self._removers.extend(self.adapter.record_vision_saliency(self._on_vision_saliency) or [])
        self._removers.extend(self.adapter.install(self))

    @property
    def prefill_compaction(self) -> Compaction | None:
        """Which prompt rows entered the LLM in the latest prefill (None before one): trainers use it to
        line full-length labels up with the compressed logits."""
        return None if self.state is None else self.state.prefill

    def on_remove(self, remover: Callable[[], None]) -> None:
        """Run ``remover`` when this engine is removed (after its own hooks), e.g. to unload a LoRA adapter."""
        self._removers.insert(0, remover)

    def remove(self) -> None:
        """Run every remover, newest first; one that fails does not keep the others from running."""
        errors = []
        while self._removers:
            try:
                self._removers.pop()()
            except Exception as err:  # noqa: BLE001 - collected and re-raised below
                errors.append(err)
        self.state = None
        if errors:
            raise errors[0]

    def _install_layer_stage(self) -> None:
        config = self.adapter.text_config()
        recording = attention.recording_name(config._attn_implementation)
        self._removers.append(patch_attribute(config, "_attn_implementation_internal", recording))
        layers = self.adapter.decoder_layers()
        for step in self.layer_steps:
            self._removers.append(patch_attribute(layers[step.method.layer - 1].self_attn, "_vtc_recorder", self._record))
        first = min(s.method.layer for s in self.layer_steps)
        for idx in range(first, self.num_layers):
            hook = layers[idx].register_forward_pre_hook(self._layer_hook(idx), with_kwargs=True)
            self._removers.append(hook.remove)

    def _record_video_encoding(self, base: nn.Module) -> Callable[[], None]:
        """Remember the arguments of the latest video encoding.

        generate() encodes videos before the prefill forward and then passes only the features
        (``mm_encoder_outputs``), so the grid and pixels must be caught where they are encoded.
        The wrapper is an instance attribute, removed by ``unwrap``.
        """
        name = self.adapter.video_encoder  # InternVL and SmolVLM encode frames with get_image_features
        original = getattr(base, name)
        signature = inspect.signature(original)

        def encode_video(*args: Any, **kwargs: Any):
            bound = signature.bind(*args, **kwargs)
            self._encoded_video = dict(bound.arguments)
            self._encoding_video = True
            try:
                return original(*args, **kwargs)
            finally:
                self._encoding_video = False

        return patch_attribute(base, name, functools.wraps(original)(encode_video))

    def _record_expansion(self, model: nn.Module) -> Callable[[], None]:
        """Remember how generate() copies each prompt (``num_beams``, ``num_return_sequences``).

        The videos were encoded for the caller's batch before the copies were made, so layouts,
        pixels and selections are built per sample and repeated per copy. The wrapper is an
        instance attribute, removed by ``unwrap``.
        """
        original = model._expand_inputs_for_generation
        signature = inspect.signature(original)

        def expand_inputs(*args: Any, **kwargs: Any):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments: dict[str, Any] = {}
            for name, value in bound.arguments.items():
                if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                else:
                    arguments[name] = value
            factor = int(arguments["expand_size"])
            tensors = {k: v for k, v in arguments.items() if isinstance(v, torch.Tensor)}
            self._expansion = _Expansion(factor, tensors) if factor > 1 else None
            return original(*args, **kwargs)

        return patch_attribute(model, "_expand_inputs_for_generation", functools.wraps(original)(expand_inputs))

    def _prefill_needs(self, what: str) -> bool:
        return any(what in step.method.needs for step in self.prefill_steps)

    def _on_vision_saliency(self, per_video: list[torch.Tensor]) -> None:
        """Keep the vision tower's saliency of videos (not of images encoded by the same tower)."""
        if self._encoding_video:
            self._encoded_video.setdefault("vision_saliency", []).extend(per_video)

    # -- prefill stage -----------------------------------------------------------------------------
    def _capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._captured = kwargs

    def _language_model_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        captured, self._captured = self._captured, None
        encoded, self._encoded_video = self._encoded_video, {}
        expansion, self._expansion = self._expansion, None
        if captured is not None:
            captured = {**encoded, **{k: v for k, v in captured.items() if v is not None}}
        cache = kwargs.get(self._cache_key)
        if cache is not None and getattr(cache, "is_compileable", False):
            raise ValueError(
                "vtc cannot compress into a static/compileable KV cache (its length is fixed); "
                "use the default DynamicCache (cache_implementation='dynamic')"
            )
        past = cache.get_seq_length() if cache is not None else 0
        has_video = captured is not None and self._has_video(captured)
        if past == 0:
            self.state = None
            if not has_video:
                return None
            return self._prefill(captured, kwargs, expansion)
        if has_video:
            raise ValueError("vtc cannot add a new video to an existing KV cache; start generation from an empty cache")
        if self.state is not None and cache is self.state.cache:
            return self._decode(kwargs)
        return None

    def _has_video(self, captured: dict) -> bool:
        input_ids = captured.get("input_ids")
        if input_ids is None:
            if captured.get("pixel_values_videos") is not None:
                raise ValueError("vtc needs input_ids to locate the video tokens; pass input_ids, not inputs_embeds")
            return False
        return bool((input_ids == self.adapter.visual_token_id()).any())

    def _prefill(self, captured: dict, kwargs: dict, expansion: _Expansion | None):
        kwargs, created_cache = self._with_cache(kwargs)
        embeds, mask = kwargs["inputs_embeds"], kwargs.get("attention_mask")
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = self._default_prefill_positions(embeds)
        copies = 1
        if expansion is not None and expansion.matches(captured):
            # layouts and pixels come from the inputs the caller passed, one row per sample
            captured, copies = {**captured, **expansion.inputs}, expansion.factor
        # Copies of a sample are identical rows: decide once per sample, on its first copy, and repeat.
        tokens, visual, stats = self._sample_tokens(
            captured, embeds[::copies], None if mask is None else mask[::copies], copies
        )
        tokens = [replace(tok) for tok in per_copy(tokens, copies)]
        visual = visual.repeat_interleave(copies, dim=0)
        replaced = False
        representative = [_positions_of(tok, n) for tok, n in zip(tokens, stats.visual_tokens)]
        for step in self.prefill_steps:
            tokens, merged, moves = self._run_step(step, tokens, stats, layer=None, copies=copies)
            replaced |= merged
            representative = [_follow(rep, move) for rep, move in zip(representative, moves)]
        if replaced:
            stats.merged_into = [_original_index(rep, tok) for rep, tok in zip(representative, tokens)]
            embeds = embeds.clone()
            for b, tok in enumerate(tokens):
                embeds[b, tok.index] = tok.features.to(embeds.dtype)
        kept = ~visual
        for b, tok in enumerate(tokens):
            kept[b, tok.index] = True
        compaction = Compaction.from_kept(kept)
        stats.kept_indices = [sorted_list(t.source) for t in tokens]
        self.model.vtc_stats = stats
        rewrite = replaced or not compaction.identity
        new_mask = compaction.mask_2d(mask) if rewrite else (mask if mask is not None else compaction.valid.long())
        for b, tok in enumerate(tokens):
            tok.index = new_rows(compaction, tok.index, b)
        self.state = _Forward(
            cache=kwargs.get(self._cache_key), orig_len=kept.shape[1], prefill=compaction, rewritten=rewrite,
            n_dropped=(~kept).sum(dim=1), mask_2d=new_mask, visual=tokens, copies=copies,
        )
        if not rewrite:
            return args_kwargs(kwargs) if created_cache else None
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = compaction.rows(embeds)
        kwargs["attention_mask"] = new_mask
        kwargs["position_ids"] = self._compact_positions(positions, compaction, new_mask)
        self.adapter.compact_lm_kwargs(kwargs, compaction.gather, compaction.valid, kept)
        return args_kwargs(kwargs)

    def _sample_tokens(
        self, captured: dict, embeds: torch.Tensor, mask: torch.Tensor | None, copies: int
    ) -> tuple[list[VisualTokens], torch.Tensor, CompressionStats]:
        """Each sample's visual tokens, after the select stage, with stats already per language-model row.

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
            visual_tokens=[int(lay.rows.numel()) for lay in row_layouts], num_layers=self.num_layers
        )
        stats.notes += [f"sample {row}: {note}" for row, lay in enumerate(row_layouts) for note in lay.notes]
        tokens = [
            VisualTokens(
                features=embeds[b, lay.rows], coords=lay.coords, frame=lay.frame, time=lay.time, index=lay.rows,
                grid=lay.grid, source=torch.arange(lay.rows.numel(), device=embeds.device),
            )
            for b, lay in enumerate(layouts)
        ]
        if self._prefill_needs("query"):
            for b, tok in enumerate(tokens):
                tok.question = question_rows(embeds[b], visual[b], None if mask is None else mask[b])
                tok.query = tok.question.mean(dim=0)
        if self._prefill_needs("pixels"):
            pixels = self.adapter.pixels(captured, [len(t) for t in tokens])
            if pixels is None:
                raise ValueError("this method needs the raw video pixels (pixel_values_videos), which were not passed")
            for tok, pix in zip(tokens, pixels):
                tok.pixels = pix
        if self.select is not None:
            tokens = self.select.apply(tokens, embeds, visual, stats, captured, copies)
        else:
            _copy_processor_selection(self.model, captured, stats, copies)
        if captured.get("vision_saliency") and self._prefill_needs("vision_saliency"):
            _attach_vision_saliency(tokens, captured["vision_saliency"], [int(lay.rows.numel()) for lay in layouts])
        return tokens, visual, stats

    def _with_cache(self, kwargs: dict) -> tuple[dict, bool]:
        """Create the KV cache the language model would create itself, so decode steps can be recognised.

        A plain ``model(**inputs, use_cache=True)`` reaches the language model without a cache; the
        one it makes inside would be unknown to vtc, and a hand-written decode loop on it would not
        get its mask and positions mapped onto the shorter cache.
        """
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(self.adapter.text_config(), "use_cache", False)
        if kwargs.get(self._cache_key) is not None or not use_cache:
            return kwargs, False
        return {**kwargs, self._cache_key: DynamicCache(config=self.adapter.text_config())}, True

    def _default_prefill_positions(self, embeds: torch.Tensor) -> torch.Tensor:
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

    def _run_step(self, step: Step, tokens: list[VisualTokens], stats: CompressionStats, layer: int | None,
                  copies: int):
        """Run one method on every row; each group of ``copies`` rows (one sample) gets its first row's
        selection, so generate()'s copies of a sample keep exactly what the sample alone keeps."""
        budget = step.method.resolve_budget(step.budget or self.budget)
        start = _clock(tokens)
        out, merged, notes, moves = [], False, [], []
        for first in range(0, len(tokens), copies):
            group = tokens[first : first + copies]
            if len(group[0]) == 0:
                out += group
                moves += [torch.zeros(0, dtype=torch.long, device=tok.features.device) for tok in group]
                continue
            selection = step.method.compress(group[0], budget)
            merged |= selection.features is not None
            notes += [f"sample {row}: {note}" for row in range(first, first + copies) for note in selection.notes]
            out += [tok.subset(selection.keep, selection.features) for tok in group]
            moves += [selection.positions(len(group[0]))] * copies
        stats.stages.append(
            StageRecord(
                method=step.method.name, stage=step.method.stage, layer=layer,
                tokens_before=[len(t) for t in tokens], tokens_after=[len(t) for t in out],
                ms=(_clock(tokens) - start) * 1000.0, notes=notes,
            )
        )
        return out, merged, moves

    def _decode(self, kwargs: dict):
        state = self.state
        state.phase = "decode"
        if not state.rewritten:
            return None
        mask = kwargs.get("attention_mask")
        q_len = kwargs["inputs_embeds"].shape[1] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"].shape[1]
        if mask is None:
            extra = state.cache.get_seq_length() + q_len - state.mask_2d.shape[1]
            tail = state.mask_2d.new_ones(state.mask_2d.shape[0], extra)
        else:
            tail = mask[:, state.orig_len :]
        new_mask = torch.cat([state.mask_2d, tail.to(state.mask_2d.dtype)], dim=1)
        expected = state.cache.get_seq_length() + q_len
        if new_mask.shape[1] != expected:
            raise RuntimeError(
                f"vtc lost track of the sequence: the cache holds {state.cache.get_seq_length()} tokens, "
                f"{q_len} are new, but the padding mask maps to {new_mask.shape[1]}"
            )
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = new_mask
        positions = kwargs.get("position_ids")
        if positions is None and self.adapter.rope == "1d":
            kwargs["position_ids"] = self._continued_positions(q_len, new_mask.device)
        if positions is not None and self.adapter.has_text_position_row(positions):
            positions = positions.clone()
            positions[0] -= state.n_dropped.to(positions.device)[:, None]
            kwargs["position_ids"] = positions
        return args_kwargs(kwargs)

    def _continued_positions(self, q_len: int, device: torch.device) -> torch.Tensor:
        """1D ids for new tokens when the caller passed none: original prompt length + step.

        The language model would count from the (shorter) cache length instead, shifting every
        decoded token by the number of dropped rows.
        """
        state = self.state
        start = state.cache.get_seq_length() + state.orig_len - state.prefill.gather.shape[1]
        return torch.arange(start, start + q_len, device=device)[None]

    # -- layer stage ---------------------------------------------------------------------------------
    def _record(self, module: nn.Module, attn: torch.Tensor) -> None:
        if self.state is not None and self.state.phase == "prefill":
            self.state.recorded[module.layer_idx] = attn

    def _layer_hook(self, idx: int):
        steps = [s for s in self.layer_steps if s.method.layer == idx]

        def hook(module: nn.Module, args: tuple, kwargs: dict):
            state = self.state
            if state is None:
                return None
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            args = args[1:]
            if state.phase == "prefill":
                kwargs.update(state.overrides)
                if steps:
                    hidden = self._cut(idx, steps, hidden, kwargs)
            else:
                cut = next((c for c in reversed(state.cuts) if c.layer <= idx), None)
                if cut is not None:
                    kwargs["attention_mask"] = self._decode_layer_mask(cut.composed, kwargs.get("attention_mask"))
            return (hidden, *args), kwargs

        return hook

    def _cut(self, idx: int, steps: list[Step], hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        state = self.state
        attn = state.recorded.pop(idx - 1, None)
        if attn is None:
            raise RuntimeError(f"no attention was recorded at layer {idx - 1}; the layer stage cannot run")
        state.visual = [tok.to(hidden.device) for tok in state.visual]
        attn = attn.to(hidden.device)
        tokens = [
            VisualTokens(**{**tok.__dict__, "features": hidden[b, tok.index], "attn": attn[b, tok.index]})
            for b, tok in enumerate(state.visual)
        ]
        stats = self.model.vtc_stats
        for step in steps:
            tokens, merged, _ = self._run_step(step, tokens, stats, layer=idx, copies=state.copies)
            if merged:
                hidden = hidden.clone()
                for b, tok in enumerate(tokens):
                    hidden[b, tok.index] = tok.features.to(hidden.dtype)
        stats.layer_kept_indices[idx] = [sorted_list(t.source) for t in tokens]
        visual = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        for b, tok in enumerate(state.visual):
            visual[b, tok.index] = True
        kept = ~visual
        for b, tok in enumerate(tokens):
            kept[b, tok.index] = True
        local = Compaction.from_kept(kept)
        for b, tok in enumerate(tokens):
            tok.index = new_rows(local, tok.index, b)
        state.visual = tokens
        previous_mask = state.layer_mask_2d if state.layer_mask_2d is not None else state.mask_2d
        state.layer_mask_2d = local.mask_2d(previous_mask)
        composed = local if not state.cuts else state.cuts[-1].composed.then(local)
        state.cuts.append(_Cut(idx, composed))
        overrides = {"attention_mask": _prefill_layer_mask(local, kwargs.get("attention_mask"), hidden, _is_flash(self.adapter))}
        if kwargs.get("position_embeddings") is not None:
            overrides["position_embeddings"] = tuple(
                local.rows(_batched(t, hidden.shape[0])) for t in kwargs["position_embeddings"]
            )
        if kwargs.get("position_ids") is not None:
            overrides["position_ids"] = text_positions(state.layer_mask_2d)
        state.overrides = overrides
        kwargs.update(overrides)
        return local.rows(hidden)

    def _decode_layer_mask(self, cut: Compaction, mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            if bool(cut.valid.all()):
                return None
            extra = self.state.cache.get_seq_length() + 1 - cut.kept.shape[1]
            valid = cut.valid_columns(extra)
            return valid.long() if _is_flash(self.adapter) else valid[:, None, None, :]
        if mask.ndim == 2:
            extra = mask.shape[1] - cut.kept.shape[1]
            columns, valid = cut.columns(extra).to(mask.device), cut.valid_columns(extra).to(mask.device, mask.dtype)
            return torch.gather(mask, 1, columns) * valid
        return cut.mask_4d(mask, rows_too=False)

    def follow_layer_cuts(self, masks: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual-row mask and per-visual-row features as they are after the layer cuts (Qwen3 deepstack)."""
        if self.state is None or not self.state.cuts:
            raise RuntimeError("deepstack features do not match the sequence and no vtc layer cut explains why")
        cut = self.state.cuts[-1].composed
        return masks.gather(1, cut.gather) & cut.valid, embeds[cut.kept[masks]]


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


def select_stage(engine: Engine, steps: list[Step]) -> Any:
    """The select-stage driver (vtc/select/stage.py) when the pipeline has a select step."""
    if not steps:
        return None
    from .select.stage import SelectStage

    return SelectStage(engine, steps)


def cache_kwarg(module: nn.Module) -> str:
    """The name under which ``module.forward`` takes its KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name is still accepted by
    the models, but a pre-hook sees whichever name the caller used, and the models use the new one).
    """
    parameters = inspect.signature(module.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _copy_processor_selection(model: nn.Module, captured: dict, stats: CompressionStats, copies: int) -> None:
    """Frames chosen by vtc.VideoProcessor for these inputs (select stage before the processor) go to the stats,
    repeated for each of generate()'s ``copies`` of a sample."""
    from .processor import processor_selection

    record = processor_selection(model, captured)
    if record is not None:
        stats.record_selection(record.selected_frames, record.selected_times, record.scenes, copies)


def _prefill_layer_mask(local: Compaction, mask: torch.Tensor | None, hidden: torch.Tensor, flash: bool):
    """The attention mask for the trimmed sequence, in the form the attention implementation takes.

    None stays None while no padding was introduced (sdpa/flash then run plain causal); flash
    attention takes a 2D padding mask, sdpa/eager a 4D one.
    """
    if mask is None:
        if bool(local.valid.all()):
            return None
        if flash:
            return local.valid.long()
        length = local.gather.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
        full = causal[None, None] & local.valid[:, None, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=hidden.device)[None, None]
        return full | (eye & ~local.valid[:, None, :, None])
    if mask.ndim == 2:
        return local.mask_2d(mask)
    return local.mask_4d(mask, rows_too=True)


def _batched(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t.expand(batch, *t.shape[1:]) if t.shape[0] != batch else t


def _is_flash(adapter: Any) -> bool:
    return "flash" in str(adapter.text_config()._attn_implementation)


def _positions_of(tokens: VisualTokens, num_visual: int) -> torch.Tensor:
    """[num_visual] each original visual token's row among ``tokens`` (-1: a select stage already dropped it)."""
    out = torch.full((num_visual,), -1, dtype=torch.long, device=tokens.source.device)
    out[tokens.source] = torch.arange(len(tokens), device=tokens.source.device)
    return out


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


def _clock(tokens: list[VisualTokens]) -> float:
    """Wall time, synchronising CUDA first so per-stage milliseconds are real on GPU."""
    device = next((t.features.device for t in tokens if len(t)), None)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def args_kwargs(kwargs: dict) -> tuple[tuple, dict]:
    return (), kwargs
