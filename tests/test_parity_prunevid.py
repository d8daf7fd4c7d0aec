"""PruneVid's outer stage reproduces every official reference run; its fixes, budgets and positions behave.

No stored run diverges on purpose: none has a one-frame window (the official 0/0), fewer than 7
frames (the k = 7 crash) or a zero cluster count, and none depends on the density noise.
"""
from __future__ import annotations

import pytest
import torch

from vtc import Budget, VisualTokens
from vtc.methods.prunevid import PruneVid, prunevid_merge, refine_clusters

from .vectors import load, parametrize_cases
from .video_like import video_tokens


def _frames(tensors: dict) -> torch.Tensor:
    t, h, w = tensors["in.pooling_shape"].tolist()
    return tensors["in.features"].view(t, h * w, -1)


def _member_means(features: torch.Tensor, token_to_out: torch.Tensor, n_out: int) -> torch.Tensor:
    flat = features.reshape(-1, features.shape[-1])
    return torch.stack([flat[token_to_out == j].mean(0) for j in range(n_out)])


@parametrize_cases("prunevid")
def test_prunevid_matches_official_outputs(case: str) -> None:
    meta, tensors = load("prunevid", case)
    for run in meta["runs"]:
        rid, params = run["id"], run["params"]
        result = prunevid_merge(_frames(tensors), tau=params["tau"], temporal_segment_ratio=params["temporal_segment_ratio"],
                                cluster_ratio=params["cluster_ratio"], k=params["k"])
        assert torch.equal(result.labels_raw, tensors[f"{rid}.temporal_labels_raw"]), f"{case}/{rid}"
        assert torch.equal(result.labels_refined, tensors[f"{rid}.temporal_labels_refined"]), f"{case}/{rid}"
        for name in ("window_sizes", "static_sizes", "dynamic_sizes"):
            assert getattr(result, name) == tensors[f"{rid}.{name}"].tolist(), f"{case}/{rid}: {name}"
        assert torch.equal(result.token_to_out, tensors[f"{rid}.token_to_out"]), f"{case}/{rid}"
        assert torch.allclose(result.out_features, tensors[f"{rid}.out_features"], rtol=1e-4, atol=1e-5)


@parametrize_cases("prunevid")
def test_method_keeps_each_official_token_at_its_earliest_member(case: str) -> None:
    meta, tensors = load("prunevid", case)
    run = meta["runs"][0]
    rid, params = run["id"], run["params"]
    t, h, w = tensors["in.pooling_shape"].tolist()
    tokens = VisualTokens.from_grid(tensors["in.features"], (t, h, w))
    method = PruneVid(tau=params["tau"], temporal_segment_ratio=params["temporal_segment_ratio"],
                      cluster_ratio=params["cluster_ratio"], k=params["k"])
    selection = method.compress(tokens, Budget())
    assert selection.notes == []
    token_to_out, official = tensors[f"{rid}.token_to_out"], tensors[f"{rid}.out_features"]
    earliest = torch.stack([(token_to_out == j).nonzero().min() for j in range(official.shape[0])])
    order = torch.argsort(earliest)
    assert torch.equal(selection.keep, earliest[order])
    assert torch.allclose(selection.features, official[order], rtol=1e-4, atol=1e-5)


def test_refine_clusters_follows_the_official_rules() -> None:
    # Label 0 keeps both tied longest runs; label 1 loses its short run; label 2 (only length 1) dissolves.
    assert refine_clusters([0, 0, 1, 0, 0, 1, 1, 1, 2]) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    # Ties between neighbours go left; the left length is measured after earlier relabelling.
    assert refine_clusters([1, 1, 2, 0, 0]) == [1, 1, 1, 0, 0]
    assert refine_clusters([2, 0, 0, 1, 1, 1]) == [0, 0, 0, 1, 1, 1]
    # Every label dissolved and no neighbours: label 0.
    assert refine_clusters([3, 1, 2]) == [0, 0, 0]


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 6])
def test_short_videos_run_with_clamped_k_and_one_frame_windows_have_no_static_tokens(frames: int) -> None:
    features = torch.randn(1, 16, 8).expand(frames, 16, 8).contiguous()  # perfectly static
    result = prunevid_merge(features, tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5)
    assert result.temporal_k == min(7, frames) and result.temporal_clusters >= 1
    assert bool((result.token_to_out >= 0).all())
    for size, static in zip(result.window_sizes, result.static_sizes):
        assert static == 0 if size == 1 else static == 8  # 16 static positions > 14: clustered to int(16*0.5)
    assert torch.allclose(result.out_features, _member_means(features, result.token_to_out, result.out_features.shape[0]),
                          atol=1e-6)
    tokens = VisualTokens.from_grid(features.reshape(frames * 16, 8), (frames, 4, 4))
    selection = PruneVid().compress(tokens, Budget())
    if frames < 7:
        assert any("clamped" in note for note in selection.notes)


def test_refined_windows_have_two_frames_or_more_so_only_a_one_frame_video_meets_the_0_over_0() -> None:
    g = torch.Generator().manual_seed(6)
    for _ in range(200):
        length = int(torch.randint(2, 12, (1,), generator=g))
        labels = torch.randint(0, 4, (length,), generator=g).tolist()
        refined = refine_clusters(labels)
        bounds = [i for i in range(1, length) if refined[i] != refined[i - 1]]
        sizes = [b - a for a, b in zip([0, *bounds], [*bounds, length])]
        assert min(sizes) >= 2, (labels, refined)


@pytest.mark.parametrize("budget", [Budget(retain=0.1), Budget(retain=0.25), Budget(retain=0.5), Budget(tokens=9)])
def test_budget_is_met_exactly_with_plain_member_means(budget: Budget) -> None:
    g = torch.Generator().manual_seed(4)
    features = torch.randn(1, 36, 16, generator=g).expand(8, 36, 16).clone()
    features[:, :10] = torch.randn(8, 10, 16, generator=g)
    tokens = VisualTokens.from_grid(features.reshape(8 * 36, 16), (8, 6, 6))
    selection = PruneVid().compress(tokens, budget)
    count = budget.count(8 * 36)
    result = prunevid_merge(features, tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, count=count)
    assert result.window_sizes == [8], "alike frames: one window"
    assert selection.keep.numel() == sum(result.static_sizes) + sum(result.dynamic_sizes) == count
    if count <= 26 + 8 * 10:  # static merging leaves 26 window-mean tokens plus 10 dynamic per frame
        assert result.tau == 0.8 and not any("tau raised" in note for note in selection.notes)
    else:  # merging every static position would undercut the budget: fewer positions count as static
        assert result.tau > 0.8 and result.left_at_tau == 106
        assert any(note.startswith("tau raised from 0.8") for note in selection.notes)
    kept = result.token_to_out >= 0
    means = _member_means(features, result.token_to_out, result.out_features.shape[0])
    assert torch.allclose(result.out_features, means, atol=1e-6)
    earliest = torch.stack([(result.token_to_out == j).nonzero().min() for j in range(means.shape[0])])
    assert torch.equal(selection.keep, torch.sort(earliest).values)
    assert bool(kept.all()) or any("dropped whole" in note for note in selection.notes)


def test_knob_validation_and_refusals() -> None:
    for bad in (dict(tau=2.0), dict(temporal_segment_ratio=0.0), dict(cluster_ratio=1.5), dict(k=0)):
        with pytest.raises(ValueError):
            PruneVid(**bad)
    with pytest.raises(ValueError, match="not both"):
        PruneVid(cluster_ratio=0.5).resolve_budget(Budget(retain=0.2))
    with pytest.raises(ValueError, match="video-level"):
        PruneVid().resolve_budget(Budget(tokens=4, scope="frame"))


def test_budget_above_what_static_merging_leaves_raises_tau_just_enough() -> None:
    tokens = video_tokens(16, 14)  # a static background and one moving object: 3,136 tokens
    features = tokens.features.view(16, 196, -1)
    for retain in (0.5, 0.25, 0.1, 0.05):
        count = Budget(retain=retain).count(16 * 196)
        selection = PruneVid().compress(tokens, Budget(retain=retain))
        assert selection.keep.numel() == count
        result = prunevid_merge(features, tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, count=count)
        if result.left_at_tau >= count:
            assert result.tau == 0.8
            continue
        assert not bool((result.token_to_out < 0).any())
        static_at = {}
        for threshold in (result.tau, torch.nextafter(torch.tensor(result.tau), torch.tensor(-2.0)).item()):
            merged = prunevid_merge(features, tau=threshold, temporal_segment_ratio=0.25, cluster_ratio=1.0)
            static_at[threshold] = sum(w * s for w, s in zip(merged.window_sizes, merged.static_sizes)) - sum(
                merged.static_sizes)
        low = min(static_at)
        assert 16 * 196 - static_at[result.tau] >= count, "the raised tau leaves enough tokens"
        assert 16 * 196 - static_at[low] < count, "and a hair lower does not"
        assert any(note.startswith(f"tau raised from 0.8 to {result.tau:.4f}") for note in selection.notes)

