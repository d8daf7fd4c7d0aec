"""DTD and FastV reproduce every reference vector made with the official implementations."""
from __future__ import annotations

import torch

from vtc.patches.qwen_vl import CLIP_MEAN, CLIP_STD, token_pixels
from vtc import Budget, VisualTokens
from vtc.methods.dtd import DTD
from vtc.methods.fastv import FastV

from .vectors import load, parametrize_cases

MERGE = 2


def _merged_grid(grid_thw: torch.Tensor) -> tuple[int, int, int]:
    t, gh, gw = grid_thw.tolist()
    return t, gh // MERGE, gw // MERGE


@parametrize_cases("dtd_feature")
def test_dtd_feature_matches_official_kept_indices(case: str) -> None:
    meta, tensors = load("dtd_feature", case)
    tokens = VisualTokens.from_grid(tensors["in.features"], _merged_grid(tensors["in.grid_thw"]))
    for run in meta["runs"]:
        params = run["params"]
        method = DTD(threshold=params["threshold"], absolute=params["absolute"], mode="feature")
        kept = method.compress(tokens, Budget()).keep
        expected = tensors[f"{run['id']}.kept_idx"]
        assert torch.equal(kept, expected), f"{case}/{run['id']}: {kept.numel()} kept vs {expected.numel()} official"
        dropped = torch.bincount(tokens.frame, minlength=tokens.grid[0]) - torch.bincount(
            tokens.frame[kept], minlength=tokens.grid[0]
        )
        assert torch.equal(dropped, tensors[f"{run['id']}.num_dropped_per_frame"])


@parametrize_cases("dtd_pixel")
def test_dtd_pixel_matches_official_kept_indices(case: str) -> None:
    meta, tensors = load("dtd_pixel", case)
    grid_thw = tensors["in.grid_thw"]
    tokens = VisualTokens.from_grid(torch.zeros(int(grid_thw.prod()) // MERGE**2, 1), _merged_grid(grid_thw))
    tokens.pixels = token_pixels(tensors["in.pixel_values_videos"], grid_thw[None], MERGE, 2, CLIP_MEAN, CLIP_STD)
    raw = tensors["in.video_uint8"].float() / 255.0
    # The un-normalised pixels really are the raw frames: first sub-frame of token 0 is the top-left 28x28 of frame 0.
    assert torch.allclose(tokens.pixels[0, 0].view(3, 2, 2, 14, 14).permute(0, 1, 3, 2, 4).reshape(3, 28, 28),
                          raw[0, :, :28, :28], atol=1e-5)
    for run in meta["runs"]:
        params = run["params"]
        method = DTD(threshold=params["threshold"], absolute=params["absolute"], mode="pixel")
        kept = method.compress(tokens, Budget()).keep
        assert torch.equal(kept, tensors[f"{run['id']}.kept_idx"]), f"{case}/{run['id']}"


@parametrize_cases("fastv")
def test_fastv_matches_official_selection(case: str) -> None:
    meta, tensors = load("fastv", case)
    attn = tensors["in.attn_last_row"]
    start, length = int(tensors["in.image_token_start_index"]), int(tensors["in.image_token_length"])
    head_mean = attn.mean(dim=0)[start : start + length]
    tokens = VisualTokens.from_grid(torch.zeros(length, 1), (1, 1, length))
    tokens.attn = head_mean
    for run in meta["runs"]:
        rid = run["id"]
        kept = FastV(ratio=run["params"]["fastv_r"]).compress(tokens, Budget()).keep
        keep_indexs = torch.cat([torch.arange(start), start + kept, torch.arange(start + length, attn.shape[1])])
        if run["ties_present"]:
            must, candidates = tensors[f"{rid}.must_keep_image_idx"], tensors[f"{rid}.tie_candidates_image_idx"]
            assert kept.numel() == run["params"]["k_kept"]
            assert set(must.tolist()) <= set(kept.tolist())
            assert set(kept.tolist()) - set(must.tolist()) <= set(candidates.tolist())
        else:
            assert torch.equal(keep_indexs, tensors[f"{rid}.keep_indexs"]), f"{case}/{rid}"
