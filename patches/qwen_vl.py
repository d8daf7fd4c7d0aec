"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: M-RoPE families whose videos arrive as one (T, H, W) grid each."""
from __future__ import annotations

import types
from typing import Any, Callable

import torch

from ..patching import patch_attribute
from ..tokens import grid_coords
from .base import FamilyAdapter, VisualLayout
from .qwen_processor import Qwen25ProcessorPolicy, QwenProcessorPolicy
from .qwen_vision import record_last_block_saliency

# The processors' default normalisation (OpenAI CLIP for Qwen2/2.5-VL, 0.5/0.5 for Qwen3-VL).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
# Qwen processors sample video at 2 fps by default, so one temporal patch of 2 frames spans 1 s.
DEFAULT_FPS = 2.0


class QwenVLAdapter(FamilyAdapter):
    """Visual rows are ``video_token_id`` placeholders, laid out t-major then h then w per video.

    Timing: Qwen2.5-VL passes ``second_per_grid_ts`` to the model, so token times are exact.
    Qwen2-VL and Qwen3-VL do not (Qwen3-VL writes timestamps as text), so times assume the
    processor's default 2 fps; they are informational and no method here depends on them.
    """

    model_types = ("qwen2_vl", "qwen2_5_vl")
    family = "Qwen2-VL / Qwen2.5-VL"
    rope = "mrope"
    select_stage = "encoder"
    vision_stage = "tower"
    known_limits = "Qwen2-VL token times assume the processor's default 2 fps"
    pixel_mean = CLIP_MEAN
    pixel_std = CLIP_STD
    processor_policies = (QwenProcessorPolicy, Qwen25ProcessorPolicy)

    def has_text_position_row(self, positions: torch.Tensor) -> bool:
        return positions.ndim == 3 and positions.shape[0] == 4

    def visual_token_id(self) -> int:
        return int(self.config.video_token_id)

    def _merge(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    def _temporal_patch(self) -> int:
        return int(self.config.vision_config.temporal_patch_size)

    def layouts(self, captured: dict[str, Any], visual_mask: torch.Tensor) -> list[VisualLayout]:
        grids = captured.get("video_grid_thw")
        counts = visual_mask.sum(dim=1).tolist()
        if grids is None:
            if any(counts):
                raise ValueError("the prompt has video tokens but no video_grid_thw was passed to the model")
            return [VisualLayout.empty(visual_mask.device) for _ in counts]
        grids = grids.tolist()
        seconds = captured.get("second_per_grid_ts")
        seconds = (
            [float(s) for s in seconds.tolist()]
            if isinstance(seconds, torch.Tensor)
            else [self._temporal_patch() / DEFAULT_FPS] * len(grids)
        )
        merge = self._merge()
        layouts, video = [], 0
        for sample, count in enumerate(counts):
            parts, have = [], 0
            while have < count:
                if video >= len(grids):
                    raise ValueError(
                        f"sample {sample} has {count} video tokens but video_grid_thw describes only {have} "
                        "of them: the prompt and the grids disagree"
                    )
                t, h, w = grids[video]
                parts.append((t, h // merge, w // merge, seconds[video]))
                have += t * (h // merge) * (w // merge)
                video += 1
            if have != count:
                raise ValueError(
                    f"sample {sample} has {count} video tokens but its grids {parts} describe {have}: "
                    "vtc will not guess which rows belong to which frame"
                )
            rows = visual_mask[sample].nonzero().flatten()
            layouts.append(_grid_layout(rows, parts))
        if video != len(grids):
            raise ValueError(f"video_grid_thw lists {len(grids)} videos but the prompts hold {video}")
        return layouts

    def record_vision_saliency(self, sink: Callable[[list[torch.Tensor]], None]) -> list[Callable[[], None]]:
        windowed = self.config.model_type == "qwen2_5_vl"
        return record_last_block_saliency(self.base_model().visual, windowed, sink)

    def install_vision_stage(self, stage: Any) -> list[Callable[[], None]]:
        windowed = self.config.model_type == "qwen2_5_vl"
        if getattr(stage.method, "every_block", False):
            from .qwen_tower_merge import QwenTowerMerge

            model_dir = getattr(self.config, "_name_or_path", None) or None
            return QwenTowerMerge(self.base_model().visual, stage, windowed, model_dir).install()
        from .qwen_vision_stage import QwenTowerCut

        return QwenTowerCut(self.base_model().visual, stage, windowed).install()

    def pixels(self, captured: dict[str, Any], sample_sizes: list[int]) -> list[torch.Tensor] | None:
        values, grids = captured.get("pixel_values_videos"), captured.get("video_grid_thw")
        if values is None or grids is None:
            return None
        flat = token_pixels(values, grids, self._merge(), self._temporal_patch(), self.pixel_mean, self.pixel_std)
        return list(torch.split(flat, sample_sizes))

    # -- select stage (patches/qwen_select.py) --------------------------------------------------
    def select_thumbnails(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """Per video [T, tp, C, H/m, W/m] low-resolution intensities of every frame group."""
        from .qwen_select import group_thumbnails

        values, grids = _video_arguments(args, kwargs)
        return group_thumbnails(values, grids, self._merge(), self._temporal_patch(), self.pixel_mean, self.pixel_std)

    def encode_selected(self, encode: Callable[..., Any], kept: list[torch.Tensor], args: tuple, kwargs: dict) -> Any:
        """The model's video features with only the ``kept`` groups of each video encoded."""
        from .qwen_select import encode_groups

        values, grids = _video_arguments(args, kwargs)
        rest = {k: v for k, v in kwargs.items() if k not in ("pixel_values_videos", "video_grid_thw")}
        return encode_groups(encode, values, grids, kept, self._merge(), **rest)


def _video_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values_videos, video_grid_thw) of a ``get_video_features`` call, however they were passed."""
    values = args[0] if args else kwargs["pixel_values_videos"]
    grids = args[1] if len(args) > 1 else kwargs["video_grid_thw"]
    return values, grids


def token_pixels(
    values: torch.Tensor, grids: torch.Tensor, merge: int, temporal_patch: int,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> torch.Tensor:
    """Raw pixels [N, tp, C, P] of every merged video token from ``pixel_values_videos``.

    The Qwen processor flattens each video as (T, H/m, W/m, m, m, C, tp, p, p); this undoes that
    order and the mean/std normalisation, so pixel-level methods compare real intensities in [0, 1].
    """
    channels = len(mean)
    patch = int(round((values.shape[-1] / (channels * temporal_patch)) ** 0.5))
    mean_t = torch.tensor(mean, dtype=torch.float32, device=values.device).view(1, 1, channels, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=values.device).view(1, 1, channels, 1)
    per_video, start = [], 0
    for t, h, w in grids.tolist():
        rows = values[start : start + t * h * w].float()
        start += t * h * w
        hm, wm = h // merge, w // merge
        grid = rows.view(t, hm, wm, merge, merge, channels, temporal_patch, patch, patch)
        grid = grid.permute(0, 1, 2, 6, 5, 3, 4, 7, 8).reshape(t * hm * wm, temporal_patch, channels, -1)
        per_video.append(grid * std_t + mean_t)
    if not per_video:
        return values.new_zeros(0, temporal_patch, channels, 0)
    return torch.cat(per_video)


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL: as Qwen2.5-VL, plus deepstack features that must follow the kept visual rows.

    Each frame is preceded by a ``<t seconds>`` timestamp and wrapped in vision start/end tokens;
    those are text rows, so vtc never drops them.
    """

    model_types = ("qwen3_vl",)
    family = "Qwen3-VL"
    known_limits = "token times assume the processor's default 2 fps (the model reads timestamps as text)"
    pixel_mean = HALF
    pixel_std = HALF

    def compact_lm_kwargs(
        self, kwargs: dict[str, Any], gather: torch.Tensor, valid: torch.Tensor, kept: torch.Tensor
    ) -> None:
        masks = kwargs.get("visual_pos_masks")
        if masks is None:
            return
        embeds = kwargs.get("deepstack_visual_embeds")
        if embeds is not None:
            keep_rows = kept[masks]
            kwargs["deepstack_visual_embeds"] = [e[keep_rows] for e in embeds]
        kwargs["visual_pos_masks"] = masks.gather(1, gather) & valid

    def install(self, engine: Any) -> list[Callable[[], None]]:
        """Route deepstack injection through the engine when a layer cut shortened the sequence."""
        lm = self.language_model()
        original = lm._deepstack_process

        def deepstack_process(_self: Any, hidden_states: torch.Tensor, masks: torch.Tensor, embeds: torch.Tensor):
            # after a layer cut (which may leave the padded length as it was: the longest row kept its length)
            if (engine.state is not None and engine.state.cuts) or hidden_states.shape[1] != masks.shape[1]:
                masks, embeds = engine.follow_layer_cuts(masks, embeds)
            return original(hidden_states, masks, embeds)

        return [patch_attribute(lm, "_deepstack_process", types.MethodType(deepstack_process, lm))]


def _grid_layout(rows: torch.Tensor, parts: list[tuple[int, int, int, float]]) -> VisualLayout:
    """Coordinates of videos laid out t-major, h, w; later videos continue the frame count, times restart."""
    if not parts:  # a prompt without video in a batch with videos
        return VisualLayout.empty(rows.device)
    coords, times, frame_offset = [], [], 0
    for t, h, w, seconds in parts:
        video = grid_coords(t, h, w, rows.device, first_frame=frame_offset)
        coords.append(video)
        times.append((video[:, 0] - frame_offset).float() * seconds)
        frame_offset += t
    coords_t = torch.cat(coords)
    height = max(p[1] for p in parts)
    width = max(p[2] for p in parts)
    return VisualLayout(rows, coords_t, coords_t[:, 0].clone(), torch.cat(times), (frame_offset, height, width))
