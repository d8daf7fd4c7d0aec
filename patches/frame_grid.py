"""1D-RoPE families whose video placeholders are whole frames of a fixed token grid (the LLaVA line).

Each video fills ``frames x (prefix + H*W) + suffix`` consecutive placeholder rows: per frame an
optional prefix (Video-LLaVA's [CLS]) and the H x W grid in raster order, then an optional suffix
per video (LLaVA-OneVision's newline). Only the grid rows are offered to methods; prefix and suffix
rows are kept like text, so a method can never drop a newline or a [CLS].
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .base import FamilyAdapter, VisualLayout
from .qwen_vl import CLIP_MEAN, CLIP_STD


class FrameGridAdapter(FamilyAdapter):
    """Shared layout reading for families whose every video frame yields the same token grid.

    Subclasses give ``frame_grid`` (H, W) and the per-frame prefix / per-video suffix row counts.
    Token times are frame indices (1 frame = 1 "second"): these models are not told the sampling
    rate, so vtc does not know it either; no method depends on absolute times.
    """

    rope = "1d"
    select_stage = "prefill"
    pixel_mean, pixel_std = CLIP_MEAN, CLIP_STD
    batch_note = "left-padded, per-sample budgets; videos batched together need equal frame counts (processor)"
    known_limits = "no per-token pixels (`dtd(mode=pixel)` refuses); token times are frame indices"
    frame_prefix_rows: int = 0
    video_suffix_rows: int = 0

    def visual_token_id(self) -> int:
        return int(self.config.video_token_id)

    def frame_pixels(self, captured: dict[str, Any]) -> torch.Tensor | None:
        videos = captured.get("pixel_values_videos")
        return None if videos is None else videos.flatten(0, 1)

    def layouts(self, captured: dict[str, Any], visual_mask: torch.Tensor) -> list[VisualLayout]:
        counts = visual_mask.sum(dim=1).tolist()
        device = visual_mask.device
        if not any(counts):
            return [VisualLayout.empty(device) for _ in counts]
        videos = captured.get("pixel_values_videos")
        if videos is None or videos.ndim != 5:
            raise ValueError(
                f"the prompt has {self.family} video tokens but no pixel_values_videos [videos, frames, C, H, W] "
                "reached the model, so vtc cannot tell which rows belong to which frame"
            )
        frames = int(videos.shape[1])
        height, width = self.frame_grid()
        per_frame = self.frame_prefix_rows + height * width
        per_video = frames * per_frame + self.video_suffix_rows
        offsets = self._grid_offsets(frames, height, width, device)
        layouts, seen = [], 0
        for sample, count in enumerate(counts):
            if count % per_video:
                raise ValueError(
                    f"sample {sample} has {count} video placeholder rows, not a multiple of {per_video} "
                    f"({frames} frames x ({self.frame_prefix_rows} + {height}x{width}) + {self.video_suffix_rows}): "
                    "the prompt and the model's frame grid disagree, and vtc will not guess"
                )
            num_videos = count // per_video
            placeholders = visual_mask[sample].nonzero().flatten()
            starts = torch.arange(num_videos, device=device) * per_video
            rows = placeholders[(starts[:, None] + offsets[None]).flatten()]
            layouts.append(VisualLayout.of_grid(rows, num_videos * frames, height, width))
            seen += num_videos
        if seen != videos.shape[0]:
            raise ValueError(f"pixel_values_videos holds {videos.shape[0]} videos but the prompts hold {seen}")
        return layouts

    def _grid_offsets(self, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Offsets of the grid rows within one video's placeholder block, frame-major then raster."""
        per_frame = self.frame_prefix_rows + height * width
        frame_starts = torch.arange(frames, device=device) * per_frame + self.frame_prefix_rows
        return (frame_starts[:, None] + torch.arange(height * width, device=device)[None]).flatten()

    # -- vision stage on CLIP towers (patches/projector_cut.py) --------------------------------------------
    def feature_layer(self) -> int | None:
        """Index of the encoder layer whose output is the video features (None: the embeddings)."""
        chosen = self.config.vision_feature_layer
        num_layers = self.config.vision_config.num_hidden_layers
        states = [v if v >= 0 else num_layers + 1 + v for v in (chosen if isinstance(chosen, list) else [chosen])]
        return max(states) - 1 if max(states) > 0 else None

    def clip_projector_cut(self, stage: Any, tower: nn.Module, pool: Callable[..., torch.Tensor] | None,
                           cls_row: bool, tower_cls: bool = True, after: str | None = None) -> list[Callable[[], None]]:
        """The vision stage on the projector's input, read at the feature layer of a CLIP-style ``tower`` (a real
        [CLS], else ``tower_cls=False``: the frame's mean query); ``pool`` maps patches onto the projector's
        rows where several patches make one; ``after``: decide on the output of that base-model method instead."""
        from .projector_cut import ProjectorCut, cls_attention_and_keys, mean_query_attention_and_keys

        if getattr(stage.method, "every_block", False):
            raise NotImplementedError(
                f"the {self.family} adapter cannot run {stage.method.name}: it acts in every block of the tower, "
                f"and {self.family}'s vision stage acts on the feature layer, before the projector"
            )
        layer = self.feature_layer()
        depth = int(self.config.vision_config.num_hidden_layers)
        if layer is None or stage.method.layer != -2 and stage.method.layer % depth != layer:
            raise ValueError(
                f"{stage.method.name} on {self.family} reads the encoder layer whose output is the video features "
                f"(layer {layer} of {depth}; the method's default layer means it); other layers are not available "
                "before the projector"
            )
        encoder = getattr(tower, "vision_model", tower).encoder

        def frames() -> list[int]:
            videos = stage.engine._encoded_video["pixel_values_videos"]
            return [int(videos.shape[1])] * int(videos.shape[0])

        read = cls_attention_and_keys if tower_cls else mean_query_attention_and_keys
        cut = ProjectorCut(encoder.layers[layer].self_attn, self.base_model().multi_modal_projector, stage, layer,
                              self.frame_grid(), frames, read, pool, cls_row, tower_cls)
        return cut.install() if after is None else cut.install_after(self.base_model(), after)
