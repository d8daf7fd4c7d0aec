"""Layer cuts: a pre-hook on decoder layer K trims hidden states, rotary cos/sin, positions and the mask
using the last prompt token's attention recorded at layer K-1 (or, for methods with ``attention_from =
"own"``, layer K's attention on its input, probed before it runs); later layers get the trimmed versions.
The KV cache keeps full length below K and the short length from K on, so decode steps get each
layer's mask mapped onto its own cache length.

A layer method may define ``attention_rows(tokens) -> int | None``: given the rows' tokens as they enter
layer K-1, how many of the last query rows' attention it needs (0: every row's) or None (none, nothing is
computed); without it, the last row's."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..attention import uses_flash
from ..patching import patch_attribute
from ..pipeline import Step
from ..sequence import Compaction, new_rows, text_positions
from ..stats import sorted_list
from ..tokens import VisualTokens
from .state import LayerCut
from .steps import run_step


class LayerCuts:
    """The layer stage of one engine: attention recorders below each cut and pre-hooks from the first cut on."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.adapter = engine.adapter
        self.steps = engine.pipeline.of_stage("layer")
        if self.steps and not self.adapter.supports_layer_stage:
            raise NotImplementedError(
                f"the {self.adapter.family} adapter does not support layer-stage methods "
                f"({', '.join(s.method.name for s in self.steps)}); use prefill-stage methods"
            )
        self.num_layers = len(self.adapter.decoder_layers())
        for step in self.steps:
            if step.method.attention_from not in ("previous", "own"):
                raise ValueError(f"{step.method.name}: attention_from must be 'previous' or 'own'")
            check_layer(step.method, self.num_layers, "acts at")

    def install(self) -> list[Callable[[], None]]:
        """Attention recorders below the cuts and pre-hooks from the first cut on; returns the removers."""
        if not self.steps:
            return []
        removers = []
        layers = self.adapter.decoder_layers()
        for step in self.steps:
            if step.method.attention_from == "previous":
                removers.append(patch_attribute(layers[step.method.layer - 1].self_attn, "_vtc_recorder", self._record))
        first = min(s.method.layer for s in self.steps)
        for idx in range(first, self.num_layers):
            removers.append(layers[idx].register_forward_pre_hook(self._layer_hook(idx), with_kwargs=True).remove)
        return removers

    def _record(self, module: nn.Module, attention_of: Callable[..., torch.Tensor]) -> None:
        state = self.engine.state
        if state is None or state.phase != "prefill":
            return
        step = next(s for s in self.steps if s.method.layer == module.layer_idx + 1)
        rows = _attention_rows(step, state.visual)
        if rows is not None:
            state.recorded[module.layer_idx] = attention_of(rows)

    def _layer_hook(self, idx: int):
        steps = [s for s in self.steps if s.method.layer == idx]

        def hook(module: nn.Module, args: tuple, kwargs: dict):
            state = self.engine.state
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
                    kwargs["attention_mask"] = self._decode_mask(cut.composed, kwargs.get("attention_mask"))
            return (hidden, *args), kwargs

        return hook

    def _cut(self, idx: int, steps: list[Step], hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        state = self.engine.state
        if steps[0].method.attention_from == "own":
            attn = self._own_attention(idx, hidden, kwargs)
        else:
            attn = state.recorded.pop(idx - 1, None)
            if attn is None and _attention_rows(steps[0], state.visual) is not None:
                raise RuntimeError(f"no attention was recorded at layer {idx - 1}; the layer stage cannot run")
        state.visual = [tok.to(hidden.device) for tok in state.visual]
        attn = None if attn is None else attn.to(hidden.device)
        tokens = [
            VisualTokens(**{**tok.__dict__, "features": hidden[b, tok.index],
                            "attn": None if attn is None else attn[b, tok.index]})
            for b, tok in enumerate(state.visual)
        ]
        stats = self.engine.model.vtc_stats
        changed = False
        for step in steps:
            tokens, merged, _ = run_step(
                step, tokens, stats, self.engine.budget, layer=idx, copies=state.copies, entered=state.entered
            )
            if merged:
                hidden = hidden.clone()
                for b, tok in enumerate(tokens):
                    hidden[b, tok.index] = tok.features.to(hidden.dtype)
            changed |= merged
        if not changed and all(len(new) == len(old) for new, old in zip(tokens, state.visual)):
            state.visual = tokens  # nothing dropped or merged: no cut here (the tokens may carry a method's state)
            return hidden
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
        state.cuts.append(LayerCut(idx, composed))
        overrides = {"attention_mask": _prefill_mask(local, kwargs.get("attention_mask"), hidden, self._flash())}
        if kwargs.get("position_embeddings") is not None:
            overrides["position_embeddings"] = tuple(
                local.rows(_batched(t, hidden.shape[0])) for t in kwargs["position_embeddings"]
            )
        if kwargs.get("position_ids") is not None:
            overrides["position_ids"] = text_positions(state.layer_mask_2d)
        state.overrides = overrides
        kwargs.update(overrides)
        return local.rows(hidden)

    def _own_attention(self, idx: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Layer ``idx``'s last-query attention on its input, before the layer runs: its attention module is
        called once on the normalised input in probe mode (queries, keys and the one recorded row; no
        attention output, no cache), so the ranking sees exactly the keys the layer would see."""
        layer = self.adapter.decoder_layers()[idx]
        recorded: list[torch.Tensor] = []
        removers = [
            patch_attribute(layer.self_attn, "_vtc_recorder", lambda module, attention_of: recorded.append(attention_of())),
            patch_attribute(layer.self_attn, "_vtc_probe", True),
        ]
        try:
            arguments = {k: v for k, v in kwargs.items() if k not in (self.engine.cache_key, "use_cache")}
            with torch.no_grad():
                layer.self_attn(hidden_states=self.adapter.attention_input(layer, hidden), **arguments)
        finally:
            for remove in reversed(removers):
                remove()
        if not recorded:
            raise RuntimeError(f"layer {idx}'s attention module did not go through vtc's recording attention")
        return recorded[0]

    def _decode_mask(self, cut: Compaction, mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            if bool(cut.valid.all()):
                return None
            extra = self.engine.state.cache.get_seq_length() + 1 - cut.kept.shape[1]
            valid = cut.valid_columns(extra)
            return valid.long() if self._flash() else valid[:, None, None, :]
        if mask.ndim == 2:
            extra = mask.shape[1] - cut.kept.shape[1]
            columns, valid = cut.columns(extra).to(mask.device), cut.valid_columns(extra).to(mask.device, mask.dtype)
            return torch.gather(mask, 1, columns) * valid
        return cut.mask_4d(mask, rows_too=False)

    def _flash(self) -> bool:
        return uses_flash(self.adapter.text_config())

    def follow(self, masks: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual-row mask and per-visual-row features as they are after the layer cuts (Qwen3 deepstack)."""
        state = self.engine.state
        if state is None or not state.cuts:
            raise RuntimeError("deepstack features do not match the sequence and no vtc layer cut explains why")
        cut = state.cuts[-1].composed
        return masks.gather(1, cut.gather) & cut.valid, embeds[cut.kept[masks]]


def check_layer(method: Any, num_layers: int, acts: str) -> None:
    """A method that reads the attention of the layer before its own must act at a layer in 1..L-1."""
    if not 1 <= method.layer < num_layers:
        raise ValueError(
            f"{method.name} {acts} layer {method.layer}, but it needs the attention of the layer "
            f"before, so it must be in 1..{num_layers - 1} for this model"
        )


def _attention_rows(step: Step, tokens: list[VisualTokens]) -> int | None:
    """How many last query rows' attention the step at the next layer needs now (0: all; None: none)."""
    rows = getattr(step.method, "attention_rows", None)
    return 1 if rows is None else rows(tokens)


def _prefill_mask(local: Compaction, mask: torch.Tensor | None, hidden: torch.Tensor, flash: bool):
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
