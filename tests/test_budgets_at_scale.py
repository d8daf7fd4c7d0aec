"""Budgets at the sizes real video LLMs run at: every method keeps exactly ``Budget.count`` tokens, or says why not.

The conformance suite runs whole models at 128 visual tokens, a size at which several methods never
leave their easy regime (static merging cannot overshoot a budget of 64 tokens, a budget of 13 is
always below one frame). Here the method classes run alone on video-like tokens
(:mod:`tests.video_like`) at 128, 3,136 and 12,544 tokens (8 x 4x4, 16 x 14x14 and 64 x 14x14
frame groups: Qwen-like 2x2 merged groups) and retain 0.5 / 0.25 / 0.1 / 0.05.

Every prefill method meets its budget exactly (HoliTom and PruneVid too, on static content, by merging
less: see their docstrings); the structured baselines in ``GRANULAR`` meet budgets only up to their
granularity and must name the count they kept in a note (reported in ``vtc_stats``). Methods that
leave their regime at a budget (DyCoke below its anchor frames) still keep the count.

Runtime: the features are 16-dimensional (cost depends on the budget logic, not on D) and CenterCLIP
runs 2 k-medoids rounds instead of 100 (its medoid count is apportioned before clustering; the rounds
never change it). The methods in ``HEAVY`` run up to 3,136 tokens: at 12,544 each takes seconds per
call on a loaded 2-core machine, and their counts do not depend on the video's length (a greedy's
pick count, an apportionment over segments). ``eval/bench_methods.py`` reports every prefill method
at 12,544 tokens and every retain, tokens kept beside the budget.
"""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc import Budget
from vtc.select import Frames, UnitCost

from .video_like import SIZES, video_tokens

RETAINS = (0.5, 0.25, 0.1, 0.05)
KNOBS = {"centerclip": {"iterations": 2}}
GRANULAR = {"pool": "whole blocks of a frame's grid", "uniform": "whole frames"}
HEAVY = {
    "divprune": "an N x N distance pass over all tokens",
    "fastvid": "an N x N density pass per anchor frame",
    "centerclip": "a sequential initialisation step per medoid (6,272 of them at retain 0.5)",
}
LLM_LAYERS = 28  # Qwen2.5-VL-7B

_TOKENS: dict[int, vtc.VisualTokens] = {}


def _tokens(size: int) -> vtc.VisualTokens:
    if size not in _TOKENS:
        _TOKENS[size] = video_tokens(*SIZES[size])
    return _TOKENS[size]


def _methods(stage: str) -> list[str]:
    return [name for name in vtc.list_methods() if vtc.get_method(name).stage == stage]


def _cases() -> list[tuple[str, int]]:
    return [(name, size) for name in _methods("prefill") for size in SIZES
            if not (size > 3136 and name in HEAVY)]


def _check_selection(name: str, selection, total: int, count: int) -> None:
    keep = selection.keep
    assert keep.numel() == keep.unique().numel() and int(keep.min()) >= 0 and int(keep.max()) < total
    kept = keep.numel()
    if name not in GRANULAR:
        assert kept == count, f"{name} kept {kept} tokens for a budget of {count}: {selection.notes}"
    elif kept != count:
        assert any(str(kept) in note for note in selection.notes), (
            f"{name} kept {kept} tokens for a budget of {count} without a note naming the count: {selection.notes}"
        )


@pytest.mark.parametrize("retain", RETAINS)
@pytest.mark.parametrize(("name", "size"), _cases())
def test_prefill_method_meets_the_budget(name: str, size: int, retain: float) -> None:
    tokens = _tokens(size)
    method = vtc.get_method(name)(**KNOBS.get(name, {}))
    budget = method.resolve_budget(Budget(retain=retain))
    selection = method.compress(tokens, budget)
    _check_selection(name, selection, size, budget.count(size))


@pytest.mark.parametrize("retain", RETAINS)
@pytest.mark.parametrize("size", list(SIZES))
def test_fastv_keeps_exactly_the_budget(size: int, retain: float) -> None:
    method = vtc.get_method("fastv")()
    selection = method.compress(_tokens(size), method.resolve_budget(Budget(retain=retain)))
    assert selection.keep.numel() == Budget(retain=retain).count(size)


@pytest.mark.parametrize("retain", RETAINS)
@pytest.mark.parametrize("size", list(SIZES))
def test_pyramiddrop_cuts_keep_their_share_and_reach_the_flop_retention(size: int, retain: float) -> None:
    method = vtc.get_method("pyramiddrop")()
    if retain < method.min_retain(LLM_LAYERS):
        return  # refused at wrap (the conformance suite checks the refusal); nothing to run
    tokens = _tokens(size)
    bounds, shares = [0], []
    for part, _ in method.parts(LLM_LAYERS, Budget(retain=retain)):
        selection = part.compress(tokens, part.entry_budget(size))
        assert selection.keep.numel() == max(1, int(size * part.keep)), "each cut keeps its share of N (at least one)"
        bounds.append(part.layer)
        shares.append(selection.keep.numel() / size)
    bounds.append(LLM_LAYERS)
    layers = [b - a for a, b in zip(bounds, bounds[1:])]
    reached = (layers[0] + sum(n * s for n, s in zip(layers[1:], shares))) / LLM_LAYERS
    assert abs(reached - retain) < len(shares) / size, "flooring (or the one-token minimum) moves each cut by < 1 token"


def _frames(units: int, seed: int = 0) -> Frames:
    g = torch.Generator().manual_seed(seed)
    thumbs = torch.rand(1, 2, 3, 8, 8, generator=g).expand(units, 2, 3, 8, 8).clone()
    thumbs += 0.05 * torch.rand(units, 2, 3, 8, 8, generator=g)
    thumbs[units // 3 :] += 0.3  # a scene cut a third of the way in
    features = torch.randn(units, 16, generator=g)
    return Frames(thumbs=thumbs.clamp(0, 1), times=torch.arange(units, dtype=torch.float32),
                  indices=torch.arange(units * 2).view(units, 2), keyframe=torch.zeros(units, dtype=torch.bool),
                  features=features, query=torch.randn(16, generator=g))


SELECTORS = ["fps", "keyclips", "keyclips(relevance=novelty)", "keyframes", "query", "scenes", "uniform-frames"]


@pytest.mark.parametrize("retain", RETAINS)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("shares", [True, False], ids=["wrap", "processor"])
@pytest.mark.parametrize("spec", SELECTORS)
def test_selector_spends_the_budget_in_whole_groups(spec: str, shares: bool, size: int, retain: float) -> None:
    """A selector keeps whole frame groups (or shares of them inside wrap): it stays within the budget and
    leaves less than one group of it unspent, or says why (one group minimum, too few distinct groups)."""
    units, side = SIZES[size]
    per_unit = side * side
    method = vtc.Pipeline.parse(spec).steps[0].method
    budget = method.resolve_budget(Budget(retain=retain))
    plan = method.plan(_frames(units), budget, UnitCost(tokens_at=lambda scale: per_unit, shares=shares))
    share = plan.share.tolist() if plan.share is not None else [1.0] * plan.keep.numel()
    kept = sum(max(1, min(per_unit, round(s * per_unit))) for s in share)
    count = budget.count(units * per_unit)
    assert plan.keep.numel() == plan.keep.unique().numel()
    if count < per_unit:
        assert kept == per_unit and any("below one frame group" in note for note in plan.notes)
        return
    assert kept <= count
    unspent = count - kept
    if unspent >= per_unit:
        assert any(str(plan.keep.numel()) in note for note in plan.notes), (
            f"{spec} left {unspent} of {count} tokens unspent (more than a group of {per_unit}) without a note: "
            f"{plan.notes}"
        )
