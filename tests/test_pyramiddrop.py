"""PyramidDrop: each cut ranks by its own layer's attention, keeps shares of what entered the LLM, and the
budget is the FLOP-equivalent retention."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.methods.pyramiddrop import PyramidDrop, flop_retention, solve_ratio

from .attention_oracle import top_rows, with_eager
from .builders import FAMILIES, tiny, video


@pytest.mark.parametrize("family", FAMILIES)
def test_first_cut_keeps_the_tokens_its_own_layers_eager_attention_ranks_highest(family: str) -> None:
    """The probe of layer K's attention (beside sdpa, before the layer runs) equals eager attention at layer K."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "pyramiddrop(ratio=0.5)"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    first = min(stats.layer_kept_indices)
    kept = stats.layer_kept_indices[first][0]
    out = with_eager(tm.model, lambda: tm.model(**inputs, output_attentions=True))
    rows = tm.visual_rows(inputs, 0)
    assert len(kept) == int(rows.numel() * 0.5)
    assert kept == top_rows(out.attentions[first][0], rows, len(kept))


def test_stage_counts_are_shares_of_the_tokens_that_entered_and_reach_the_asked_flop_retention() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(16)])
    with vtc.compressed(tm.model, "pyramiddrop", retain=0.6), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    total = stats.visual_tokens[0]
    ratio = solve_ratio([1, 2, 3], 4, 0.6)
    assert flop_retention([1, 2, 3], 4, ratio) == pytest.approx(0.6)
    assert sorted(stats.layer_kept_indices) == [1, 2, 3]
    counts = [len(stats.layer_kept_indices[layer][0]) for layer in (1, 2, 3)]
    assert counts == [int(total * ratio**s) for s in (1, 2, 3)]
    assert 0.6 - 3 / total <= stats.flop_retention <= 0.6  # int() flooring loses under one token per stage
    assert stats.sample_flop_retention(0) == pytest.approx(stats.flop_retention)  # one sample: the same number


def test_budgets_it_cannot_mean_are_refused_clearly() -> None:
    tm = tiny("qwen2_vl")
    with pytest.raises(ValueError, match="FLOP-equivalent retention is at least 0.250"):
        vtc.wrap(tm.model, "pyramiddrop", retain=0.1)
    with pytest.raises(ValueError, match="pass retain=, not tokens="):
        vtc.wrap(tm.model, "pyramiddrop", tokens=8)
    with pytest.raises(ValueError, match="cannot fit 8 stages into 4 layers"):
        vtc.wrap(tm.model, "pyramiddrop(stages=8)", retain=0.5)
    assert not vtc.is_wrapped(tm.model)


def test_default_schedule_is_the_papers_on_a_32_layer_model() -> None:
    method = PyramidDrop()
    parts = method.parts(32, vtc.Budget())
    assert [(part.layer, part.keep) for part, _ in parts] == [(8, 0.5), (16, 0.25), (24, 0.125)]
    assert method.min_retain(32) == 0.25
    assert flop_retention([8, 16, 24], 32, 0.5) == pytest.approx(15 / 32)
