"""The engine's hook lifecycle: which hooks vtc puts on a model, what each records, and which stage a
language-model call goes to (a prefill to compact, a decode step to remap, or neither)."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
from torch import nn

from .. import attention
from ..budget import Budget
from ..patching import patch_attribute
from ..pipeline import Pipeline, Step
from ..sequence import Compaction
from .cache import CacheStage
from .decode import decode_kwargs
from .layers import LayerCuts
from .prefill import PrefillCompaction
from .state import Expansion, ForwardState, cache_kwarg

HOOKED_STAGES = ("select", "vision", "prefill", "layer", "cache")


class Engine:
    """Owns every hook vtc puts on one model; ``remove`` restores the model exactly."""

    def __init__(self, model: nn.Module, adapter: Any, pipeline: Pipeline, budget: Budget) -> None:
        self.model, self.adapter, self.budget = model, adapter, budget
        unsupported = [s.method.name for s in pipeline.steps if s.method.stage not in HOOKED_STAGES]
        if unsupported:
            raise NotImplementedError(
                f"methods {unsupported} act at a stage this version of vtc cannot hook yet ({', '.join(HOOKED_STAGES)} only)"
            )
        # What runs: each method as the parts it acts as on this model (several cuts, prefill + layer). Budgets
        # are resolved here, so a step left without one fails at wrap, not at the first forward.
        self.pipeline = pipeline.expanded(len(adapter.decoder_layers()), budget)
        self.layers = LayerCuts(self)
        self.cache = CacheStage(self)
        self.num_layers = self.layers.num_layers
        self.select = select_stage(self, self.pipeline.of_stage("select"))
        self.vision = vision_stage(self, self.pipeline.of_stage("vision"))
        self.prefill = PrefillCompaction(self)
        self.cache_key = cache_kwarg(adapter.language_model())
        self.state: ForwardState | None = None
        self._captured: dict[str, Any] | None = None
        self._encoded_video: dict[str, Any] = {}
        self._encoding_video = False
        self._expansion: Expansion | None = None
        self._removers: list[Callable[[], None]] = []

    # -- installation and removal --------------------------------------------------------------------
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
        if self.vision is not None:
            self._removers.extend(self.vision.install())
        self._removers.append(self._record_expansion(self.model))
        self._removers.append(lm.register_forward_pre_hook(self._language_model_pre_hook, with_kwargs=True).remove)
        if self.pipeline.of_stage("layer") or self.pipeline.of_stage("cache"):
            self._removers.append(self._record_attention())
        self._removers.extend(self.layers.install())
        self._removers.extend(self.cache.install())
        if self.prefill.needs("vision_saliency"):
            self._removers.extend(self.adapter.record_vision_saliency(self._on_vision_saliency) or [])
        self._removers.extend(self.adapter.install(self))

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

    @property
    def prefill_compaction(self) -> Compaction | None:
        """Which prompt rows entered the LLM in the latest prefill (None before one): trainers use it to
        line full-length labels up with the compressed logits."""
        return None if self.state is None else self.state.prefill

    def follow_layer_cuts(self, masks: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual-row mask and per-visual-row features as they are after the layer cuts (Qwen3 deepstack)."""
        return self.layers.follow(masks, embeds)

    # -- recorders -------------------------------------------------------------------------------------
    def _record_attention(self) -> Callable[[], None]:
        """Switch the language model's attention to vtc's recording variant of the same implementation, which
        hands one row of attention to whichever module has a recorder (vtc/attention.py)."""
        config = self.adapter.text_config()
        return patch_attribute(config, "_attn_implementation_internal", attention.recording_name(config._attn_implementation))

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._captured = kwargs

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
            if self.vision is not None:
                self.vision.start_encoding()
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
            self._expansion = Expansion(factor, tensors) if factor > 1 else None
            return original(*args, **kwargs)

        return patch_attribute(model, "_expand_inputs_for_generation", functools.wraps(original)(expand_inputs))

    def _on_vision_saliency(self, per_video: list[torch.Tensor]) -> None:
        """Keep the vision tower's saliency of videos (not of images encoded by the same tower)."""
        if self._encoding_video:
            self._encoded_video.setdefault("vision_saliency", []).extend(per_video)

    # -- dispatch ----------------------------------------------------------------------------------------
    def _language_model_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict):
        captured, self._captured = self._captured, None
        encoded, self._encoded_video = self._encoded_video, {}
        expansion, self._expansion = self._expansion, None
        if captured is not None:
            captured = {**encoded, **{k: v for k, v in captured.items() if v is not None}}
        cache = kwargs.get(self.cache_key)
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
            self.state, new_arguments = self.prefill.run(captured, kwargs, expansion)
            return new_arguments
        if has_video:
            raise ValueError("vtc cannot add a new video to an existing KV cache; start generation from an empty cache")
        if self.state is not None and cache is self.state.cache:
            return decode_kwargs(self.state, self.adapter, kwargs)
        return None

    def _has_video(self, captured: dict) -> bool:
        input_ids = captured.get("input_ids")
        if input_ids is None:
            if captured.get("pixel_values_videos") is not None:
                raise ValueError("vtc needs input_ids to locate the video tokens; pass input_ids, not inputs_embeds")
            return False
        return bool((input_ids == self.adapter.visual_token_id()).any())


def vision_stage(engine: Engine, steps: list[Step]) -> Any:
    """The vision-stage driver (vtc/engine/vision.py) when the pipeline has a vision step."""
    if not steps:
        return None
    from .vision import VisionStage

    return VisionStage(engine, steps)


def select_stage(engine: Engine, steps: list[Step]) -> Any:
    """The select-stage driver (vtc/select/stage.py) when the pipeline has a select step."""
    if not steps:
        return None
    from ..select.stage import SelectStage

    return SelectStage(engine, steps)
