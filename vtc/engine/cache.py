"""Cache stage: during decoding, layers from L on attend only to the visual tokens a method selects from the
new token's attention at layer L-1; the other visual entries stay in the KV cache (a later step may select
them again) and are masked out of attention."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from ..attention import uses_flash
from ..patching import patch_attribute
from ..stats import CacheStep
from .layers import check_layer


class CacheStage:
    """The cache step of one engine (at most one): a recorder at layer L-1 and mask hooks on layers L.."""

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
        if engine.pipeline.of_stage("layer"):
            raise NotImplementedError(
                f"{self.step.method.name} cannot follow layer-stage cuts yet (their layers hold other visual rows); "
                "combine it with select or prefill methods"
            )
        check_layer(self.step.method, len(self.adapter.decoder_layers()), "acts from")
        self._attention: torch.Tensor | None = None
        self._blocked: list[torch.Tensor] = []  # per row, cache columns masked at layers >= L this step
        # this step's (incoming mask, key count, masked result): layers L.. share one mask object per layer type
        self._masks: tuple[Any, int, Any] | None = None

    def install(self) -> list[Callable[[], None]]:
        if self.step is None:
            return []
        layers = self.adapter.decoder_layers()
        first = self.step.method.layer
        removers = [patch_attribute(layers[first - 1].self_attn, "_vtc_recorder", self._record)]
        for idx in range(first, len(layers)):
            removers.append(layers[idx].register_forward_pre_hook(self._hook(idx), with_kwargs=True).remove)
        return removers

    def _record(self, module: nn.Module, attention_of: Callable[..., torch.Tensor]) -> None:
        state = self.engine.state
        if state is not None and state.phase == "decode":
            self._attention = attention_of()

    def _hook(self, idx: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            state = self.engine.state
            if state is None or state.phase != "decode":
                return None
            if idx == self.step.method.layer:
                self._select(state)
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs["attention_mask"] = self._masked(kwargs.get("attention_mask"), hidden, idx)
            return (hidden, *args[1:]), kwargs

        return hook

    def _select(self, state: Any) -> None:
        """Run the method on this step's attention of each row's visual tokens; record the step."""
        if self._attention is None:
            raise RuntimeError(f"no attention was recorded at layer {self.step.method.layer - 1} in this decode step")
        attn, self._attention = self._attention, None
        method, stats = self.step.method, self.engine.model.vtc_stats
        budget = method.resolve_budget(self.step.budget or self.engine.budget)
        previous = state.cache_choices or [None] * len(state.visual)
        choices, blocked = [], []
        for row, (tok, before) in enumerate(zip(state.visual, previous)):
            columns = tok.index.to(attn.device)
            if columns.numel() == 0:
                choices.append(None)
                blocked.append(columns)
                continue
            choice = method.choose(replace(tok, attn=attn[row, columns].to(tok.features.device)), budget, before)
            unselected = torch.ones(columns.numel(), dtype=torch.bool, device=columns.device)
            unselected[choice.keep.to(columns.device)] = False
            choices.append(choice)
            blocked.append(columns[unselected])
        state.cache_choices = choices
        self._blocked = blocked
        self._masks = None
        stats.cache_steps.append(CacheStep(
            layer=method.layer, kept=[0 if c is None else int(c.keep.numel()) for c in choices],
            reselected=[c is not None and c.reselected for c in choices],
            chosen=[c.keep.tolist() if c is not None and c.reselected else [] for c in choices],
        ))

    def _masked(self, mask: torch.Tensor | None, hidden: torch.Tensor, idx: int) -> torch.Tensor | None:
        """This layer's attention mask with the unselected visual columns blocked, in the form the attention
        implementation takes (2D for flash attention, else 4D; a missing mask becomes the causal one)."""
        if not any(columns.numel() for columns in self._blocked):
            return mask  # nothing to hide: the model's own mask (None keeps sdpa on its causal path)
        q_len = hidden.shape[1]
        keys = self.engine.state.cache.layers[idx].get_seq_length() + q_len
        if self._masks is not None and self._masks[0] is mask and self._masks[1] == keys:
            return self._masks[2]
        incoming = mask
        if mask is None and uses_flash(self.adapter.text_config()):
            mask = torch.ones(hidden.shape[0], keys, dtype=torch.long, device=hidden.device)
        elif mask is None:
            causal = torch.ones(q_len, keys, dtype=torch.bool, device=hidden.device).tril(keys - q_len)
            mask = causal[None, None].expand(hidden.shape[0], 1, q_len, keys).clone()
        else:
            mask = mask.clone()
        for b, columns in enumerate(self._blocked):
            columns = columns.to(mask.device)
            if mask.ndim == 2:
                mask[b, columns] = 0
            elif mask.dtype == torch.bool:
                mask[b, :, :, columns] = False
            else:
                mask[b, :, :, columns] = torch.finfo(mask.dtype).min
        self._masks = (incoming, keys, mask)
        return mask
