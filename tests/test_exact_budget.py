"""Methods that claim ``exact_budget`` keep exactly ``Method.kept_count`` tokens on any features: a serving
engine (the vLLM plugin) sizes each video's placeholder run from that number before the features exist."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc import Budget
from vtc.tokens import VisualTokens

GRIDS = ((8, 4, 4), (5, 3, 6), (2, 7, 5))
BUDGETS = (Budget(retain=0.1), Budget(retain=0.25), Budget(retain=0.5), Budget(tokens=7), Budget(retain=0.3, scope="frame"))
EXACT = [name for name in vtc.list_methods() if vtc.get_method(name).exact_budget and vtc.get_method(name).stage == "prefill"]
EXACT_VISION = [name for name in vtc.list_methods() if vtc.get_method(name).exact_budget and vtc.get_method(name).stage == "vision"]


KINDS = ("drifting", "static", "flat", "two_scenes")


def _tokens(grid: tuple[int, int, int], seed: int, kind: str) -> VisualTokens:
    """Features of the kinds that take merging and temporal methods down every branch: drifting frames, a
    frozen frame repeated, one colour everywhere (the synthetic benchmark's backgrounds), two static scenes."""
    generator = torch.Generator().manual_seed(seed)
    t, h, w = grid
    base, other = torch.randn(h * w, 16, generator=generator), torch.randn(h * w, 16, generator=generator)
    if kind == "drifting":
        features = torch.stack([base + 0.3 * i * torch.randn(h * w, 16, generator=generator) for i in range(t)])
    elif kind == "static":
        features = base.expand(t, -1, -1)
    elif kind == "flat":
        features = base[:1].expand(t, h * w, -1)
    else:
        features = torch.stack([base if i < t // 2 else other for i in range(t)])
    tokens = VisualTokens.from_grid(features.reshape(t * h * w, 16).clone(), grid, seconds_per_frame=0.5)
    tokens.vision_saliency = torch.rand(len(tokens), generator=generator)
    tokens.vision_keys = tokens.features[:, :8] + 0.1 * torch.randn(len(tokens), 8, generator=generator)
    tokens.pixels = torch.rand(len(tokens), 2, 3, 4, generator=generator)
    return tokens


def test_the_exact_prefill_methods_are_the_ones_the_vllm_plugin_can_size() -> None:
    assert {"random", "dtd", "divprune", "dycoke", "vidcom2", "evad", "centerclip", "fastvid", "holitom", "prunevid"} <= set(EXACT)
    # Structured methods: whole blocks or whole frames.
    for name in ("pool", "uniform"):
        assert not vtc.get_method(name).exact_budget, name


@pytest.mark.parametrize("name", EXACT + EXACT_VISION)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: b.describe())
def test_exact_method_keeps_its_kept_count(name: str, grid: tuple[int, int, int], budget: Budget) -> None:
    method = vtc.get_method(name)()
    try:
        resolved = method.resolve_budget(budget)
    except ValueError:
        pytest.skip(f"{name} refuses {budget.describe()}")
    t, h, w = grid
    expected = method.kept_count([h * w] * t, resolved)
    assert expected is not None
    for kind in KINDS:
        for seed in range(2):
            kept = method.compress(_tokens(grid, seed, kind), resolved).keep
            assert kept.numel() == expected, f"{kind} features, seed {seed}: kept {kept.numel()}, claimed {expected}"


def test_a_paper_knob_or_threshold_leaves_the_count_to_the_features() -> None:
    assert vtc.get_method("dtd")(threshold=0.5).kept_count([16] * 8, Budget()) is None
    assert vtc.get_method("pool")().kept_count([16] * 8, Budget(retain=0.25)) is None
    assert vtc.get_method("random")().kept_count([16] * 8, Budget(retain=0.25)) == 32
