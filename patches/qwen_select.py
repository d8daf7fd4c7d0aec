"""Qwen VL surgery for the select stage: thumbnails from processed pixels, encoding only chosen frame groups.

The Qwen vision towers attend within one temporal group (their ``cu_seqlens`` split the patch
sequence per frame group), so encoding a subset of groups gives each kept group the features the
full encoding would give it; features of dropped groups are zeros and never reach the LLM.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def group_thumbnails(
    values: torch.Tensor, grids: torch.Tensor, merge: int, temporal_patch: int,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> list[torch.Tensor]:
    """Per video [T, tp, C, H/m, W/m]: each merged token's mean intensity, per temporal sub-frame."""
    from .qwen_vl import token_pixels

    pixels = token_pixels(values, grids, merge, temporal_patch, mean, std)
    thumbs, start = [], 0
    for t, h, w in grids.tolist():
        count = t * (h // merge) * (w // merge)
        block = pixels[start : start + count].mean(dim=-1)  # [N, tp, C]
        start += count
        thumbs.append(block.view(t, h // merge, w // merge, temporal_patch, -1).permute(0, 3, 4, 1, 2))
    return thumbs


def encode_groups(
    encode: Callable[..., Any], values: torch.Tensor, grids: torch.Tensor, kept: list[torch.Tensor],
    merge: int, **kwargs: Any,
) -> Any:
    """Run ``encode`` (the model's get_video_features) on the kept groups only; zeros stand in for the rest.

    ``kept[v]`` lists video v's kept temporal groups. The output keeps the model's structure:
    ``pooler_output`` is one tensor per video and (Qwen3-VL) ``deepstack_features`` one tuple per
    layer, all at full length so transformers' placeholder check passes.
    """
    rows, sub_grids, token_rows, sizes, start, token_start = [], [], [], [], 0, 0
    for (t, h, w), groups in zip(grids.tolist(), kept):
        patches, tokens = h * w, (h // merge) * (w // merge)
        for g in groups.tolist():
            rows.append(torch.arange(start + g * patches, start + (g + 1) * patches, device=values.device))
            token_rows.append(torch.arange(token_start + g * tokens, token_start + (g + 1) * tokens))
        if groups.numel():
            sub_grids.append([groups.numel(), h, w])
        start += t * patches
        token_start += t * tokens
        sizes.append(t * tokens)
    sub_grid = torch.tensor(sub_grids, dtype=grids.dtype, device=grids.device)
    output = encode(values[torch.cat(rows)], sub_grid, **kwargs)
    placed = torch.cat(token_rows)

    def expand(parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        flat = torch.cat(parts)
        full = flat.new_zeros(token_start, *flat.shape[1:])
        full[placed.to(flat.device)] = flat
        return torch.split(full, sizes)

    output.pooler_output = expand(output.pooler_output)
    if getattr(output, "deepstack_features", None) is not None:
        output.deepstack_features = [expand(layer) for layer in output.deepstack_features]
    return output


def positions_at_times(model: Any, inputs: Any, group_times: list[torch.Tensor]) -> torch.Tensor:
    """Qwen2.5-VL position ids [4, B, L] that put each frame group at its real time.

    The model spaces a video's temporal ids evenly (group g at ``g * tokens_per_second *
    second_per_grid_ts``, i.e. at the time of its first frame counted from 0). A selection that
    skips frames is not even, so the temporal id of group g is set to ``tokens_per_second * t_g``
    (floored, as the model does), with t_g the group's first-frame time in the source video. The
    model's own ``get_rope_index`` (with zero spacing) provides everything else: text, height and
    width ids. Row 0 is the text position, as generate() builds it.
    """
    base = model.model
    video_id = int(model.config.video_token_id)
    merge = int(model.config.vision_config.spatial_merge_size)
    tokens_per_second = float(model.config.vision_config.tokens_per_second)
    grids = inputs["video_grid_thw"]
    mask = inputs["attention_mask"]
    positions, _ = base.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=grids,
        second_per_grid_ts=torch.zeros(grids.shape[0]), attention_mask=mask,
    )
    positions = positions.clone()
    for sample, ((t, h, w), times) in enumerate(zip(grids.tolist(), group_times)):
        rows = ((inputs["input_ids"][sample] == video_id) & mask[sample].bool()).nonzero().flatten()
        offsets = torch.floor(times.double() * tokens_per_second + 1e-6).long()
        positions[0, sample, rows] += offsets.repeat_interleave((h // merge) * (w // merge)).to(positions.device)
    text = mask.long().cumsum(-1) - 1
    text = text.masked_fill(mask == 0, 0)
    return torch.cat([text[None].to(positions.device), positions])
