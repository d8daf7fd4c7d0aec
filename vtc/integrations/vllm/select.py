"""One video's compression, as the plugin runs it: the configured steps through ``vtc.engine.steps.run_step``
(the function ``vtc.wrap`` runs them with) on the video's tokens laid out as transformers' Qwen adapter lays
them out. No vLLM import: tests run it on transformers' features to show both paths choose alike."""
from __future__ import annotations

import torch

from ...engine.steps import run_step
from ...stats import CompressionStats
from ...tokens import VisualTokens
from .config import ServingConfig


def keep(
    config: ServingConfig, embeds: torch.Tensor, grid: tuple[int, int, int], seconds: float,
    saliency: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept (or merged) features [K, D] of one video's tokens [T*H*W, D] (merged grid ``grid``, t-major
    raster, ``seconds`` per temporal token, ``saliency`` [T*H*W] the vision tower's ATS saliency for the
    methods that need it) and their indices among those tokens; K is exactly ``config.kept_count(grid)`` or
    this raises, since vLLM has already sized the prompt."""
    tokens = [VisualTokens.from_grid(embeds, grid, seconds_per_frame=seconds)]
    if "vision_saliency" in config.needs:
        if saliency is None:
            raise RuntimeError(f"vtc: {config.pipeline.describe()} ranks by the vision tower's saliency, which was not read")
        tokens[0].vision_saliency = saliency
    stats = CompressionStats(visual_tokens=[len(tokens[0])])
    for step in config.pipeline.steps:
        tokens, _, _ = run_step(step, tokens, stats, config.budget, layer=None, copies=1)
    kept = tokens[0]
    expected = config.kept_count(grid)
    if len(kept) != expected:
        raise RuntimeError(f"vtc: {config.pipeline.describe()} kept {len(kept)} tokens where {expected} were allotted")
    return kept.features.to(embeds.dtype), kept.source
