"""VideoLLaMA3: Qwen2 language model with 1D RoPE; videos as ``(T, H, W)`` grids thinned by its own compression.

VideoLLaMA3's processor has its own token compression (``use_token_compression``, on by default):
it drops every merged token whose pixels differ from the same position in the previous frame by
less than a threshold, and writes only the survivors into the prompt (``Time t s:`` + tokens per
frame). The model then receives ``video_compression_mask``, which marks the surviving grid cells.

How vtc coexists with it: the built-in step runs first, in the processor, and vtc's methods act on
the tokens it left, with their true (t, h, w) positions read from the mask. Budgets (``retain``)
count from those survivors, and the stats note how many the built-in step had already removed.
Methods that compare every position across frames (fastvid, holitom, prunevid) refuse grids with
holes; pass ``use_token_compression=False`` to the processor to hand vtc every token instead.

Images in the same prompt use ``image_token_id`` and are left alone. The ``Time t s:`` markers are
text rows (never dropped); the model receives no numeric timestamps, so token times are frame indices.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import FamilyAdapter, VisualLayout
from .qwen_vl import HALF, token_pixels


class VideoLlama3Adapter(FamilyAdapter):
    """Visual rows are ``video_token_id`` placeholders of the mask's surviving cells, t-major then h, w."""

    model_types = ("video_llama_3",)
    vision_refusal = "its own token compression already drops patches after the tower; vtc does not hook that yet"
    family = "VideoLLaMA3"
    known_limits = (
        "its own `use_token_compression` runs first, in the processor, and budgets count from what it left; "
        "fastvid, holitom and prunevid need whole frames: pass `use_token_compression=False` when it dropped tokens; "
        "token times are frame indices"
    )
    rope = "1d"
    select_stage = "prefill"
    pixel_mean = HALF
    pixel_std = HALF

    def visual_token_id(self) -> int:
        return int(self.config.video_token_id)

    def _videos(self, captured: dict[str, Any], device: torch.device) -> list[tuple[tuple[int, int, int], torch.Tensor]]:
        """Per video: its merged (T, H, W) grid and the [T*H*W] mask of cells present in the prompt."""
        grids, merges = captured.get("video_grid_thw"), captured.get("video_merge_sizes")
        if grids is None:
            return []
        if merges is None:
            raise ValueError("VideoLLaMA3 video inputs need video_merge_sizes; pass the processor's output unchanged")
        shapes = [(t, h // m, w // m) for (t, h, w), m in zip(grids.tolist(), merges.tolist())]
        sizes = [t * h * w for t, h, w in shapes]
        mask = captured.get("video_compression_mask")
        if mask is None:
            mask = torch.ones(sum(sizes), dtype=torch.bool, device=device)
        mask = mask.to(device=device, dtype=torch.bool)
        if mask.numel() != sum(sizes):
            raise ValueError(
                f"video_compression_mask has {mask.numel()} entries but video_grid_thw describes {sum(sizes)} tokens"
            )
        return list(zip(shapes, torch.split(mask, sizes)))

    def layouts(self, captured: dict[str, Any], visual_mask: torch.Tensor) -> list[VisualLayout]:
        videos = self._videos(captured, visual_mask.device)
        counts = visual_mask.sum(dim=1).tolist()
        if not videos and any(counts):
            raise ValueError("the prompt has video tokens but no video_grid_thw was passed to the model")
        layouts, video = [], 0
        for sample, count in enumerate(counts):
            parts, have = [], 0
            while have < count:
                if video >= len(videos):
                    raise ValueError(
                        f"sample {sample} has {count} video tokens but the videos' compression masks describe only "
                        f"{have} of them: the prompt and the grids disagree"
                    )
                parts.append(videos[video])
                have += int(videos[video][1].sum())
                video += 1
            if have != count:
                raise ValueError(
                    f"sample {sample} has {count} video tokens but its videos keep {have} grid cells: "
                    "vtc will not guess which rows belong to which frame"
                )
            layouts.append(_masked_grid_layout(visual_mask[sample].nonzero().flatten(), parts))
        if video != len(videos):
            raise ValueError(f"video_grid_thw lists {len(videos)} videos but the prompts hold {video}")
        return layouts

    def pixels(self, captured: dict[str, Any], sample_sizes: list[int]) -> list[torch.Tensor] | None:
        values, grids = captured.get("pixel_values_videos"), captured.get("video_grid_thw")
        merges = captured.get("video_merge_sizes")
        if values is None or grids is None or merges is None:
            return None
        if len(set(merges.tolist())) > 1:
            raise ValueError("vtc reads VideoLLaMA3 pixels only when every video uses the same merge size")
        flat = token_pixels(values, grids, int(merges[0]), 1, self.pixel_mean, self.pixel_std)
        present = torch.cat([mask for _, mask in self._videos(captured, flat.device)])
        return list(torch.split(flat[present], sample_sizes))

    def frame_thumbnails(self, captured: dict[str, Any], frames_per_video: list[int]) -> list[torch.Tensor]:
        """Per video [T, 1, C, h, w]: each merged cell's mean intensity, from the full pixels (the processor's
        own token compression thins the prompt, not ``pixel_values_videos``)."""
        values, grids = captured.get("pixel_values_videos"), captured.get("video_grid_thw")
        merges = captured.get("video_merge_sizes")
        if values is None or grids is None or merges is None:
            raise ValueError("select-stage methods need pixel_values_videos, video_grid_thw and video_merge_sizes")
        thumbs, start = [], 0
        for (t, h, w), merge in zip(grids.tolist(), merges.tolist()):
            grid = grids.new_tensor([[t, h, w]])
            cells = token_pixels(values[start : start + t * h * w], grid, merge, 1, self.pixel_mean, self.pixel_std)
            start += t * h * w
            cells = cells.mean(dim=-1).view(t, h // merge, w // merge, 1, -1)
            thumbs.append(cells.permute(0, 3, 4, 1, 2).clamp(0.0, 1.0))
        if [int(th.shape[0]) for th in thumbs] != list(frames_per_video):
            raise ValueError(
                f"the videos have {[int(th.shape[0]) for th in thumbs]} frames but the prompts hold {frames_per_video}"
            )
        return thumbs


def _masked_grid_layout(
    rows: torch.Tensor, parts: list[tuple[tuple[int, int, int], torch.Tensor]]
) -> VisualLayout:
    """Coordinates of the present cells of each video's grid; later videos continue the frame count."""
    device = rows.device
    coords, frame_offset, full = [], 0, 0
    for (t, h, w), present in parts:
        cells = present.nonzero().flatten()
        frame, rest = cells // (h * w), cells % (h * w)
        coords.append(torch.stack([frame + frame_offset, rest // w, rest % w], dim=1))
        frame_offset += t
        full += t * h * w
    if not parts:
        return VisualLayout.empty(device)
    coords_t = torch.cat(coords)
    notes = []
    if full > rows.numel():
        notes.append(
            f"VideoLLaMA3's own token compression (use_token_compression) had already dropped {full - rows.numel()} "
            f"of {full} tokens in the processor; vtc's budgets count from the {rows.numel()} left"
        )
    height = max(shape[1] for shape, _ in parts)
    width = max(shape[2] for shape, _ in parts)
    time = coords_t[:, 0].float()
    return VisualLayout(rows, coords_t, coords_t[:, 0].clone(), time, (frame_offset, height, width), notes)
