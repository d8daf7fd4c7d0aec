"""Cache stage: during decoding, layers from L on attend only to the visual tokens a method selects from the
new token's attention at layer L-1. Each of those layers attends over a compact copy of its KV cache (text,
chosen visual entries, decoded tokens; vtc/engine/compact_cache.py), re-gathered only when the selection
changes; the whole prompt's entries stay, so a later step can choose others.

After layer-stage cuts the layers hold different visual rows: the method chooses among the tokens that reach
layer L-1 (what the cuts up to it kept), and each layer from L on attends to the chosen tokens its own cache
still holds (a later cut may have dropped some)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer

from ..attention import uses_flash
from ..patching import patch_attribute
from ..sequence import Compaction
from ..stats import CacheStep
from ..tokens import VisualTokens
from .compact_cache import CompactLayer
from .layers import check_layer


@dataclass
class Layout:
    """The prompt as one or more decoder layers cache it: its visual tokens (``index``: cache columns) and padding
    mask, and which columns the current selection keeps (None while it hides nothing there)."""

    visual: list[VisualTokens]
    mask_2d: torch.Tensor
    compaction: Compaction | None = None


@dataclass
class CacheRun:
    """The cache stage's part of one prefill and its decode steps."""

    layouts: dict[int, Layout] = field(default_factory=dict)  # per decoder layer from L-1 on
    version: int = 0  # bumped whenever a row chooses anew
    reordered: Any = None  # the latest beam-search reorder applied to the selections


class CacheStage:
    """The cache step of one engine (at most one): a recorder at layer L-1, pre-hooks on layers L-1.. (layouts in
    the prefill; selection, compact caches and masks while decoding)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.adapter = engine.adapter
        steps = engine.pipeline.of_stage("cache")
        if len(steps) > 1:
            raise ValueError(f"a pipeline takes one cache-stage method, got {[s.method.name for s in steps]}")
        self.step = steps[0] if steps else None
        if self.step is None:
            return
        if not self.adapter.supports_layer_stage:
            raise NotImplementedError(f"the {self.adapter.family} adapter cannot hook decoder layers for {self.step.method.name}")
        check_layer(self.step.method, len(self.adapter.decoder_layers()), "acts from")
        self._attention: torch.Tensor | None = None
        self._previous_recorder: Callable[..., None] | None = None
        self._masks: tuple[Any, Any, torch.Tensor] | None = None  # (incoming mask, compaction, result)

    def install(self) -> list[Callable[[], None]]:
        if self.step is None:
            return []
        layers = self.adapter.decoder_layers()
        first = self.step.method.layer
        recording = layers[first - 1].self_attn
        self._previous_recorder = vars(recording).get("_vtc_recorder")  # a layer cut ranking at layer L, in the prefill
        removers = [patch_attribute(recording, "_vtc_recorder", self._record)]
        for idx in range(first - 1, len(layers)):
            removers.append(layers[idx].register_forward_pre_hook(self._hook(idx), with_kwargs=True).remove)
        removers.append(self._restore_full_layers)
        return removers

    def _record(self, module: nn.Module, attention_of: Callable[..., torch.Tensor]) -> None:
        state = self.engine.state
        if state is not None and state.phase == "decode":
            self._attention = attention_of()
        elif self._previous_recorder is not None:
            self._previous_recorder(module, attention_of)

    def _hook(self, idx: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            state = self.engine.state
            if state is None:
                return None
            if state.phase == "prefill":
                self._remember_layout(state, idx)
                return None
            if idx < self.step.method.layer:
                return None
            if idx == self.step.method.layer:
                self._select(state)
            layout = state.cache_run.layouts[idx]
            if layout.compaction is None:
                return None  # nothing hidden at this layer: its own cache and mask, untouched
            self._compact(state, idx, layout)
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs["attention_mask"] = self._mask(state, layout.compaction, kwargs.get("attention_mask"), hidden)
            return (hidden, *args[1:]), kwargs

        return hook

    def _remember_layout(self, state: Any, idx: int) -> None:
        """The visual rows and padding mask entering layer ``idx`` in the prefill (after any cut at it)."""
        if state.cache_run is None:
            state.cache_run = CacheRun()
        layouts = state.cache_run.layouts
        before = layouts.get(idx - 1)
        if before is not None and before.visual is state.visual:
            layouts[idx] = before
        else:
            layouts[idx] = Layout(state.visual, state.layer_mask_2d if state.layer_mask_2d is not None else state.mask_2d)

    def _select(self, state: Any) -> None:
        """Run the method on this step's attention of each row's visual tokens at layer L-1, derive what every
        layout keeps when a row chose anew, and record the step."""
        if self._attention is None:
            raise RuntimeError(f"no attention was recorded at layer {self.step.method.layer - 1} in this decode step")
        attn, self._attention = self._attention, None
        method, stats, run = self.step.method, self.engine.model.vtc_stats, state.cache_run
        budget = method.resolve_budget(self.step.budget or self.engine.budget)
        candidates = run.layouts[method.layer - 1].visual
        previous = state.cache_choices or [None] * len(candidates)
        choices = []
        for tok, before in zip(candidates, previous):
            if len(tok) == 0:
                choices.append(None)
                continue
            row = len(choices)
            choices.append(method.choose(replace(tok, attn=attn[row, tok.index.to(attn.device)].to(tok.features.device)), budget, before))
        state.cache_choices = choices
        chosen = [None if c is None else tok.source[c.keep.to(tok.source.device)] for tok, c in zip(candidates, choices)]
        if any(c is not None and c.reselected for c in choices):
            run.version += 1
            self._masks = None
            for layout in _distinct(run.layouts[i] for i in range(method.layer, len(self.adapter.decoder_layers()))):
                _keep_chosen(layout, chosen)
        decoded = state.cache.get_seq_length() - state.mask_2d.shape[1]  # layer 0 already holds this step's tokens
        stats.cache_steps.append(CacheStep(
            layer=method.layer, kept=[0 if c is None else int(c.keep.numel()) for c in choices],
            reselected=[c is not None and c.reselected for c in choices],
            chosen=[_entered_positions(stats.kept_indices[row], sources) if c is not None and c.reselected else []
                    for row, (c, sources) in enumerate(zip(choices, chosen))],
            kv_lengths={i: _lengths(run.layouts[i], decoded) for i in range(method.layer, len(self.adapter.decoder_layers()))},
        ))

    def _compact(self, state: Any, idx: int, layout: Layout) -> None:
        """Make layer ``idx``'s cache the compact copy of the current selection (swapping in a CompactLayer at the
        first step that hides something there, re-gathering when the selection changed since)."""
        cache, run = state.cache, state.cache_run
        layer = cache.layers[idx]
        if isinstance(layer, CompactLayer):
            if layer.version != run.version:
                layer.regather(layout.compaction, run.version)
            return
        if type(layer) is not DynamicLayer or getattr(cache, "offloading", False):
            raise NotImplementedError(
                f"{self.step.method.name} compacts DynamicCache layers on the device only; layer {idx} is "
                f"{type(layer).__name__}{' (offloaded)' if getattr(cache, 'offloading', False) else ''}"
            )
        prompt = layout.mask_2d.shape[1]
        if layer.get_seq_length() < prompt:
            raise RuntimeError(f"vtc lost track of layer {idx}'s cache: {layer.get_seq_length()} entries, prompt {prompt}")
        cache.layers[idx] = CompactLayer(layer, prompt, layout.compaction, run.version, self._on_reorder)

    def _mask(self, state: Any, compaction: Compaction, mask: torch.Tensor | None, hidden: torch.Tensor):
        """The layer's attention mask on its compact columns, in the form its attention implementation takes
        (2D for flash attention, additive for eager, else bool 4D; None where plain causal attention is exact)."""
        if mask is None:  # its length follows the step, so it is not kept across calls
            return self._built_mask(compaction, state.cache.get_seq_length() - state.mask_2d.shape[1], hidden)
        if self._masks is not None and self._masks[0] is mask and self._masks[1] is compaction:
            return self._masks[2]
        if mask.ndim == 2:
            extra = mask.shape[1] - compaction.kept.shape[1]
            columns, valid = compaction.columns(extra).to(mask.device), compaction.valid_columns(extra).to(mask.device)
            result = torch.gather(mask, 1, columns) * valid.to(mask.dtype)
        else:
            result = compaction.mask_4d(mask, rows_too=False)
        self._masks = (mask, compaction, result)
        return result

    def _built_mask(self, compaction: Compaction, decoded: int, hidden: torch.Tensor) -> torch.Tensor | None:
        """The mask for a call that passed none (plain causal): alignment padding hidden, new tokens causal."""
        q_len = hidden.shape[1]
        valid = compaction.valid_columns(decoded).to(hidden.device)
        config = self.adapter.text_config()
        if uses_flash(config):
            return None if bool(valid.all()) else valid.long()
        if q_len == 1 and bool(valid.all()):
            return None
        keys = valid.shape[1]
        causal = torch.ones(q_len, keys, dtype=torch.bool, device=hidden.device).tril(keys - q_len)
        allowed = causal[None, None] & valid[:, None, None, :]
        if "eager" in str(config._attn_implementation):
            return torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        return allowed

    def _on_reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search moved rows: each row's selection and compaction follow its beam (once per reorder)."""
        state = self.engine.state
        run = state.cache_run
        if run.reordered is beam_idx:
            return
        run.reordered, rows = beam_idx, beam_idx.tolist()
        state.cache_choices = [state.cache_choices[r] for r in rows]
        moved: dict[int, Compaction] = {}
        for layout in _distinct(run.layouts.values()):
            if layout.compaction is not None:
                c = layout.compaction
                index = beam_idx.to(c.gather.device)
                layout.compaction = moved[id(c)] = Compaction(c.gather[index], c.valid[index], c.kept[index])
        self._masks = None
        for layer in state.cache.layers:
            if isinstance(layer, CompactLayer):
                layer.compaction = moved[id(layer.compaction)]

    def _restore_full_layers(self) -> None:
        """On unwrap: the latest cache's compact layers become plain ones holding the whole sequence, so a caller
        can go on decoding it with the unwrapped model."""
        state = self.engine.state
        if state is None or state.cache is None:
            return
        for idx, layer in enumerate(state.cache.layers):
            if isinstance(layer, CompactLayer):
                state.cache.layers[idx] = layer.full()


def _keep_chosen(layout: Layout, chosen: list[torch.Tensor | None]) -> None:
    """Set the layout's compaction to its padding-free columns minus the visual tokens no row chose (kept None while
    that hides nothing and the layout was never compacted, so retain 1.0 leaves the cache exactly as it is)."""
    hidden = torch.zeros(layout.mask_2d.shape, dtype=torch.bool, device=layout.mask_2d.device)
    for b, (tok, sources) in enumerate(zip(layout.visual, chosen)):
        if sources is not None and len(tok):
            unchosen = ~torch.isin(tok.source, sources.to(tok.source.device))
            hidden[b, tok.index[unchosen].to(hidden.device)] = True
    if layout.compaction is None and not bool(hidden.any()):
        return
    layout.compaction = Compaction.from_kept(layout.mask_2d.bool() & ~hidden)


def _lengths(layout: Layout, decoded: int) -> list[int]:
    """Per row, the cache entries a layer of this layout attends to this step (padding left out)."""
    kept = layout.mask_2d.bool() if layout.compaction is None else layout.compaction.valid
    return (kept.sum(dim=1) + decoded).tolist()


def _entered_positions(entered: list[int], sources: torch.Tensor) -> list[int]:
    """Positions among the row's visual tokens that entered the LLM (sorted original indices) of ``sources``."""
    return torch.searchsorted(torch.tensor(entered, dtype=torch.long), sources.cpu().long()).tolist()


def _distinct(layouts: Any) -> list[Layout]:
    out: list[Layout] = []
    for layout in layouts:
        if not any(layout is seen for seen in out):
            out.append(layout)
    return out
