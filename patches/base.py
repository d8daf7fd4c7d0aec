"""What every family adapter declares; the only place vtc reaches into a model's structure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..tokens import grid_coords
from .processor_policy import ProcessorPolicy


@dataclass
class VisualLayout:
    """Where one sample's visual tokens sit and what grid they come from (metadata, no features)."""

    rows: torch.Tensor  # [N] rows in the prompt offered to methods; placeholder rows not listed are kept like text
    coords: torch.Tensor  # [N, 3] (t, h, w), t counted over the sample's videos
    frame: torch.Tensor  # [N]
    time: torch.Tensor  # [N] seconds
    grid: tuple[int, int, int]  # (T, H, W) summed over the sample's videos along T
    notes: list[str] = field(default_factory=list)  # for the stats, e.g. tokens a built-in step already removed

    @classmethod
    def empty(cls, device: torch.device) -> "VisualLayout":
        """A sample without visual tokens."""
        rows = torch.zeros(0, dtype=torch.long, device=device)
        return cls(rows, torch.zeros(0, 3, dtype=torch.long, device=device), rows, rows.float(), (0, 0, 0))

    @classmethod
    def of_grid(cls, rows: torch.Tensor, frames: int, height: int, width: int) -> "VisualLayout":
        """``frames`` whole height x width grids at ``rows`` (t-major, raster; frames counted across the
        sample's videos); times are frame indices."""
        if frames == 0:
            return cls.empty(rows.device)
        coords = grid_coords(frames, height, width, rows.device)
        return cls(rows, coords, coords[:, 0].clone(), coords[:, 0].float(), (frames, height, width))


class FamilyAdapter:
    """Per-family surgery points. Subclasses fill the class attributes and override what differs."""

    model_types: tuple[str, ...] = ()
    family: str = ""
    rope: str = "1d"  # "1d" or "mrope"
    language_model_path: str = "model.language_model"
    base_model_path: str = "model"
    # False refuses layer-stage methods (FastV, ...) for the family, e.g. where its decoder layers cannot be hooked.
    supports_layer_stage: bool = True
    # The base-model method that encodes a prompt's video frames (its arguments are recorded for layouts).
    video_encoder: str = "get_video_features"
    # Where select-stage methods (frame selection) act: "encoder" = the vision tower encodes only the
    # chosen frame groups; "prefill" = every frame is encoded and the chosen frames' rows are kept at the
    # language model (saves LLM tokens, not encoder time); "" = refused.
    select_stage: str = ""
    # Where vision-stage methods (VisionZip) act: "tower" = inside the vision tower, whose later blocks then
    # run on the kept tokens only; "projector" = on the tower's output before the projector (no encoder
    # time saved); "" = refused, for the reason in ``vision_refusal``.
    vision_stage: str = ""
    vision_refusal: str = "vtc has no vision-stage hooks for this family's tower yet"
    # The processor class's default normalisation, undone so selectors see intensities in [0, 1].
    pixel_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    # How vtc.VideoProcessor plans for this family's processors (patches/processor_policy.py); a processor
    # no adapter names gets the default policy (it fixes each frame's token count itself).
    processor_policies: tuple[type[ProcessorPolicy], ...] = ()
    # For the README's generated support table (vtc list --markdown).
    batch_note: str = "left-padded, per-sample budgets"
    known_limits: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config

    # -- modules -------------------------------------------------------------------------
    def language_model(self) -> nn.Module:
        return _resolve(self.model, self.language_model_path)

    def base_model(self) -> nn.Module:
        return _resolve(self.model, self.base_model_path)

    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model().layers

    def text_config(self) -> Any:
        return self.language_model().config

    def attention_input(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """What decoder ``layer`` hands its attention module for input ``hidden`` (pre-norm decoders: the
        normalised input); used to rank tokens with a layer's own attention before the layer runs."""
        return layer.input_layernorm(hidden)

    # -- visual rows ---------------------------------------------------------------------
    def visual_token_id(self) -> int:
        raise NotImplementedError

    def layouts(self, captured: dict[str, Any], visual_mask: torch.Tensor) -> list[VisualLayout]:
        """One layout per sample; raise if the visual row count disagrees with the declared grid."""
        raise NotImplementedError

    def pixels(self, captured: dict[str, Any], sample_sizes: list[int]) -> list[torch.Tensor] | None:
        """Per-sample raw pixels [N, tp, C, P] of each visual token, or None if unavailable."""
        return None

    def frame_pixels(self, captured: dict[str, Any]) -> torch.Tensor | None:
        """Every video frame of the batch [N, C, H, W] as the vision tower receives it, in prompt order."""
        return None

    def frame_thumbnails(self, captured: dict[str, Any], frames_per_video: list[int]) -> list[torch.Tensor]:
        """Per video, [F, 1, C, h, w] intensities in [0, 1] averaged over each token's cell of the frame:
        what a select-stage method scores on families that select at the prefill hook."""
        pixels = self.frame_pixels(captured)
        if pixels is None:
            raise ValueError(f"select-stage methods need the {self.family} frames' pixels, which did not reach the model")
        if pixels.shape[0] != sum(frames_per_video):
            raise ValueError(
                f"the model received {pixels.shape[0]} frames but the prompts hold {sum(frames_per_video)}: "
                "vtc will not guess which frame belongs to which prompt"
            )
        mean = torch.tensor(self.pixel_mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.pixel_std, device=pixels.device).view(1, -1, 1, 1)
        pooled = torch.nn.functional.adaptive_avg_pool2d(pixels.float() * std + mean, self.frame_grid())
        return [t[:, None] for t in torch.split(pooled.clamp(0.0, 1.0), frames_per_video)]

    def frame_grid(self) -> tuple[int, int]:
        """(H, W) tokens of one frame as they enter the language model."""
        raise NotImplementedError

    # -- select stage at the encoder (``select_stage = "encoder"`` only) ----------------------
    def select_thumbnails(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """Per video, [U, sub, C, h, w] intensities in [0, 1] of each frame group (U groups of ``sub`` frames),
        read from the arguments of ``video_encoder``: what a pixel-only selector scores before the tower runs."""
        raise NotImplementedError(f"the {self.family} adapter does not select frames at the encoder")

    def encode_selected(self, encode: Callable[..., Any], kept: list[torch.Tensor], args: tuple, kwargs: dict) -> Any:
        """``encode`` (the original ``video_encoder``) run on each video's ``kept`` frame groups only, returned
        in the shape the model expects for every group (zero features for the others, whose rows the prefill
        hook then drops)."""
        raise NotImplementedError(f"the {self.family} adapter does not select frames at the encoder")

    # -- position ids ------------------------------------------------------------------------
    def has_text_position_row(self, positions: torch.Tensor) -> bool:
        """Whether ``positions`` lead with a row of plain text positions that the model reads only for masks
        and flash-attention packing (Qwen's [4, B, L]: text, t, h, w). vtc recomputes that row from the
        compacted padding mask and shifts it back by the dropped rows while decoding."""
        return False

    # -- extra model inputs that follow the visual rows ------------------------------------
    def compact_lm_kwargs(
        self, kwargs: dict[str, Any], gather: torch.Tensor, valid: torch.Tensor, visual_keep: torch.Tensor
    ) -> None:
        """Update family-specific language-model kwargs after rows were dropped (in place)."""

    def record_vision_saliency(self, sink: Callable[[list[torch.Tensor]], None]) -> list[Callable[[], None]] | None:
        """Hooks that hand ``sink`` a ViT-attention saliency per encoded video (flattened in visual-row
        order) on every vision forward; None where the family's vision tower offers none."""
        return None

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        """Hooks that hand ``stage`` (vtc/engine/vision.py) each video's tokens at its method's layer while the
        tower encodes videos, and apply its selections; returns their removers (``vision_stage`` set only)."""
        raise NotImplementedError(f"the {self.family} adapter cannot run vision-stage methods: {self.vision_refusal}")

    def install(self, engine: Any) -> list[Callable[[], None]]:
        """Family-specific hooks beyond the generic ones; returns their removers."""
        return []


def _resolve(root: nn.Module, path: str) -> nn.Module:
    module: Any = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise AttributeError(f"{type(root).__name__} has no submodule {path!r} (stopped at {part!r})")
        module = getattr(module, part)
    return module
