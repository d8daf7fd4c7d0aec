"""Helpers for methods that work on whole frames: the [T, N] row grid and per-token saliency."""
from __future__ import annotations

import math

import torch

from ..tokens import VisualTokens

HOLES = (
    ": an earlier step (a method, or the model's own processor such as VideoLLaMA3's use_token_compression) "
    "removed different positions in different frames"
)


def mean_token_saliency(features: torch.Tensor) -> torch.Tensor:
    """Fallback saliency [T, N]: per frame, softmax of mean_token . x / sqrt(D) (one pseudo-[CLS] query).

    HoliTom averages the last ViT layer's attention over heads and queries; averaging the logits
    over queries instead of the probabilities gives exactly this single mean-token query.
    """
    x = features.float()
    logits = torch.einsum("td,tnd->tn", x.mean(dim=1), x) / math.sqrt(x.shape[-1])
    return torch.softmax(logits, dim=-1)


def whole_frames(tokens: VisualTokens, method: str) -> torch.Tensor:
    """Rows [T, N] of the frames present, each in raster order, all frames covering the same (h, w) positions.

    Methods that compare the token at one position across frames need this; an earlier stage
    that removed different positions in different frames makes them refuse clearly.
    """
    frames = tokens.frames()
    sizes = {int(rows.numel()) for rows in frames}
    if len(sizes) != 1:
        raise ValueError(f"{method} needs every frame to hold the same positions, got frame sizes {sorted(sizes)}{HOLES}")
    rows = torch.stack(frames)
    h, w = tokens.coords[rows, 1], tokens.coords[rows, 2]
    key = h * (int(w.max()) + 1) + w
    order = torch.argsort(key, dim=1, stable=True)
    rows, key = rows.gather(1, order), key.gather(1, order)
    if not bool((key == key[:1]).all()):
        raise ValueError(f"{method} needs every frame to hold the same (h, w) positions{HOLES}")
    return rows


def row_saliency(tokens: VisualTokens, rows: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Per-token saliency [T, N]: the ViT saliency if a hook gave one, else ``tokens.attn``, else the fallback."""
    for name, value in (("vision_saliency", tokens.vision_saliency), ("attn", tokens.attn)):
        if value is not None:
            value = value.flatten().to(device=features.device, dtype=torch.float32)
            notes = [] if name == "vision_saliency" else ["saliency: no ViT attention given, used tokens.attn"]
            return value[rows], notes
    return mean_token_saliency(features), [
        "saliency fallback: no ViT attention given, used the mean LLM-input token as pseudo-[CLS] query per frame"
    ]


def merged_positions(rows: torch.Tensor, token_to_out: torch.Tensor, order: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``Selection.merged_into`` of a merging method: token ``rows[j]`` went into output ``token_to_out[j]``
    (-1: dropped), and outputs are put in keep order by ``order``."""
    position_of_output = torch.argsort(order)
    out = torch.full((num_rows,), -1, dtype=torch.long, device=rows.device)
    member = token_to_out >= 0
    out[rows[member]] = position_of_output[token_to_out[member]]
    return out
