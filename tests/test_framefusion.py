"""FrameFusion: the merge rule on constructed features, the FLOP schedule, the ranking attention against eager
attention, and what a merge leaves in the model (positions, KV lengths)."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.attention import rows_attention
from vtc.engine import cache_of
from vtc.methods.framefusion import FrameFusion, FrameFusionLayer, Progress, removable_share
from vtc.patches import adapter_for
from vtc.tokens import VisualTokens

from .attention_oracle import with_eager
from .builders import tiny, video
from .video_like import SIZES, video_tokens


def _tokens(frames: list[torch.Tensor]) -> VisualTokens:
    """Tokens of a video whose frame t has features ``frames[t]`` ([H*W, D], row-major patches)."""
    features = torch.cat(frames)
    patches = frames[0].shape[0]
    return VisualTokens.from_grid(features, (len(frames), 1, patches))


def _layer(cost: float = 0.01, layer: int = 0, layers: int = 28) -> FrameFusionLayer:
    # a tight budget lets the first events remove up to 99% of the tokens, so the similarity rule alone decides
    return FrameFusionLayer(layer=layer, num_layers=layers, cost=cost)


def _orthogonal(count: int, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """``count`` mutually orthogonal unit rows (cosine 0 between any two)."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q[:count].float()


def test_a_patch_merges_into_the_previous_frame_only_when_its_cosine_reaches_the_threshold() -> None:
    basis = _orthogonal(24)
    frame0 = basis[:10]
    frame1 = frame0.clone()
    frame1[3] = 0.61 * frame0[3] + (1 - 0.61**2) ** 0.5 * basis[20]  # cosine 0.61 with frame 0's patch 3: merges
    frame1[4] = 0.59 * frame0[4] + (1 - 0.59**2) ** 0.5 * basis[21]  # cosine 0.59: stays
    frame1[5:] = basis[10:15]  # new content: stays
    selection = _layer().compress(_tokens([frame0, frame1]), vtc.Budget())
    merged = {10 + p for p in (0, 1, 2, 3)}
    assert selection.keep.tolist() == [i for i in range(20) if i not in merged]
    for p in range(5):  # every merged token goes into the same patch of frame 0, which averages the two
        target = selection.merged_into[10 + p]
        assert selection.keep[target] == (p if p != 4 else 14)
    torch.testing.assert_close(selection.features[3], (frame0[3] + frame1[3]) / 2)
    torch.testing.assert_close(selection.features[4], frame0[4])
    assert selection.carry == Progress((0.2,), "merge")  # 4 of 20 merged: >= 10%, merging goes on


def test_merging_stops_after_an_event_that_merges_under_ten_percent() -> None:
    basis = _orthogonal(40)
    frame0, frame1 = basis[:20], basis[20:40].clone()
    frame1[0] = frame0[0]  # 1 of 40 tokens qualifies: 2.5% < 10%
    selection = _layer().compress(_tokens([frame0, frame1]), vtc.Budget())
    assert selection.keep.numel() == 39  # it still merges at this event (as the official code)
    assert selection.carry == Progress((1 / 40,), "prune")
    frame1[1:4] = frame0[1:4]  # 4 of 40 = 10%: not under the bound
    assert _layer().compress(_tokens([frame0, frame1]), vtc.Budget()).carry.phase == "merge"


def test_a_run_of_similar_frames_is_averaged_with_equal_weights_into_its_first_token() -> None:
    basis = _orthogonal(8)
    base = basis[:1]
    frames = [base, base * 2.0, base * 3.0, basis[1:2], basis[1:2] * 5.0]  # cosine 1 within the two runs
    selection = _layer().compress(_tokens(frames), vtc.Budget())
    assert selection.keep.tolist() == [0, 3]
    torch.testing.assert_close(selection.features[0], base[0] * 2.0)  # (1 + 2 + 3) / 3
    torch.testing.assert_close(selection.features[1], basis[1] * 3.0)  # (1 + 5) / 2
    assert selection.merged_into.tolist() == [0, 0, 0, 1, 1]


def test_merged_tokens_compare_with_the_remaining_anchor_at_the_next_event() -> None:
    """Cascaded merging: after frame 1 merged into frame 0, frame 2 compares with frame 0's (averaged) token."""
    basis = _orthogonal(4)
    first = _tokens([basis[:1], basis[:1], basis[1:2]])
    kept = first.subset(*_applied(_layer().compress(first, vtc.Budget())))
    assert kept.frame.tolist() == [0, 2]
    second = _layer(layer=1).compress(kept, vtc.Budget())
    assert second.keep.tolist() == [0, 1]  # basis 0 vs basis 1: orthogonal, nothing more merges


def _applied(selection):
    return selection.keep, selection.features, selection.carry


def test_when_merging_alone_meets_the_budget_only_the_most_similar_merge_and_nothing_follows() -> None:
    basis = _orthogonal(40)
    frame0 = basis[:20]
    frame1 = torch.stack([0.9 * frame0[p] + (1 - 0.81) ** 0.5 * basis[20 + p] for p in range(20)])
    frame1[:5] = frame0[:5]  # the five most similar (cosine 1); the others 0.9
    # 28 layers at cost 0.9: the first event may remove 10% of the 40 tokens; 20 qualify
    upper, overspent = removable_share((), 0.9, 28)
    assert upper == pytest.approx(0.1) and not overspent
    selection = _layer(cost=0.9).compress(_tokens([frame0, frame1]), vtc.Budget())
    merged = set(range(40)) - set(selection.keep.tolist())
    assert len(merged) == int(upper * 40)  # int() of 0.0999..98 * 40: 3, as the official code
    assert merged <= set(range(20, 25))  # among the five cosine-1 tokens
    assert selection.carry.phase == "done"


def test_flop_schedule_follows_the_official_pruning_ratio() -> None:
    # after events that merged 30% and 5% of a 28-layer model's tokens, at cost 0.3
    kept = [0.7, 0.7 * 0.95]
    remaining = 28 * 0.3 - sum(kept)
    ratio, overspent = removable_share((0.3, 0.05), 0.3, 28)
    assert not overspent and ratio == pytest.approx(1 - remaining / (26 * kept[-1]))
    assert removable_share((), 1.0, 28) == (0.0, False)
    assert removable_share((0.0, 0.0), 0.05, 4) == (1.0, True)  # two full layers already exceed 4 * 0.05


@pytest.mark.parametrize("rows", [0, 4, 1])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision", "internvl"])
def test_the_ranking_attention_equals_eager_attention_averaged_over_its_query_rows(family: str, rows: int) -> None:
    """Nothing merges at threshold 1 on this clip, so layer 1 prunes by layer 0's attention on the full prompt:
    the kept tokens are the top of eager attention at layer 0, averaged over heads and the last ``rows`` query
    rows (0: all rows: the attention each token receives)."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, f"framefusion(threshold=1.0,queries={rows}):0.5"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert sorted(stats.layer_kept_indices) == [1], "the oracle needs no merge at layer 0"
    kept = stats.layer_kept_indices[1][0]
    weights = with_eager(tm.model, lambda: tm.model(**inputs, output_attentions=True)).attentions[0][0]  # [H, Q, K]
    scores = weights[:, -rows if rows else 0 :, :].mean(dim=(0, 1))[tm.visual_rows(inputs, 0)]
    expected = torch.sort(torch.sort(scores, descending=True, stable=True).indices[: len(kept)]).values.tolist()
    assert kept == expected


def test_rows_attention_in_chunks_equals_the_dense_map_under_each_mask_form(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 4, 9, 8, generator=generator), torch.randn(2, 2, 9, 8, generator=generator)
    padding = torch.ones(2, 9, dtype=torch.bool)
    padding[1, :3] = False  # sample 1 is left-padded by three rows
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    dense = causal[None, None] & padding[:, None, None, :]
    scores = (query @ key.repeat_interleave(2, dim=1).transpose(-1, -2)) * 8**-0.5
    weights = torch.softmax(scores.masked_fill(~dense, float("-inf")), dim=-1).nan_to_num(0.0)
    expected = torch.stack([weights[0].mean(0).mean(0), weights[1, :, 3:].mean(0).mean(0)])
    monkeypatch.setattr("vtc.attention.CHUNK_ELEMENTS", 2 * 4 * 9 * 2)  # two query rows per chunk
    for mask in (dense, padding.long()):  # 4D bool (sdpa/eager), 2D padding (flash)
        torch.testing.assert_close(rows_attention(query, key, mask, None, rows=0), expected)
    torch.testing.assert_close(rows_attention(query[:1], key[:1], None, None, rows=0), expected[:1])
    last4 = weights[:, :, -4:].mean(dim=(1, 2))
    torch.testing.assert_close(rows_attention(query, key, dense, None, rows=4), last4)


def test_each_layer_caches_what_the_stats_report_and_the_flop_retention_is_the_budget() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "framefusion", retain=0.5), torch.no_grad():
        out = tm.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                return_dict_in_generate=True)
        stats = tm.model.vtc_stats
    assert stats.stages[0].tokens_after[0] < stats.stages[0].tokens_before[0], "the test needs a merge at layer 0"
    total, length = stats.visual_tokens[0], inputs["input_ids"].shape[1]
    current, expected = len(stats.kept_indices[0]), []
    for idx in range(len(cache_of(out).layers)):
        current = len(stats.layer_kept_indices.get(idx, [[None] * current])[0])
        expected.append(length - (total - current) + 2)  # two decoded tokens fed back
    assert [layer.get_seq_length() for layer in cache_of(out).layers] == expected
    assert stats.flop_retention == pytest.approx(0.5, abs=2 / total)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_merged_tokens_keep_their_anchors_positions(family: str) -> None:
    """The rotary cos/sin each layer receives under framefusion are the uncompressed model's at the rows kept."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    layers = adapter_for(tm.model).decoder_layers()
    seen: dict[int, torch.Tensor] = {}

    def capture(idx: int):
        return lambda module, args, kwargs: seen.__setitem__(idx, kwargs["position_embeddings"][0])

    hooks = []
    try:
        with torch.no_grad():
            hooks = [layer.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(layers)]
            tm.model(**inputs)
            reference = dict(seen)
            with vtc.compressed(tm.model, "framefusion", retain=0.5):
                hooks += [layer.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(layers)]
                tm.model(**inputs)
                stats = tm.model.vtc_stats
    finally:
        for hook in hooks:
            hook.remove()
    rows = tm.visual_rows(inputs, 0)
    assert stats.stages[0].tokens_after[0] < stats.stages[0].tokens_before[0], "the test needs a merge at layer 0"
    current = stats.kept_indices[0]  # the first merge is on the language model's input
    for idx in range(len(layers)):
        current = stats.layer_kept_indices.get(idx, [current])[0]
        dropped = set(rows.tolist()) - set(rows[current].tolist())
        sequence = [r for r in range(inputs["input_ids"].shape[1]) if r not in dropped]
        assert torch.equal(seen[idx], reference[idx][:, sequence]), f"layer {idx}"


def test_knobs_and_budgets_are_checked() -> None:
    tm = tiny("qwen2_vl")
    with pytest.raises(ValueError, match="pass retain=, not tokens="):
        vtc.wrap(tm.model, "framefusion", tokens=8)
    with pytest.raises(ValueError, match="either cost="):
        vtc.wrap(tm.model, "framefusion(cost=0.3)", retain=0.5)
    with pytest.raises(ValueError, match="use a video-level budget"):
        vtc.wrap(tm.model, "framefusion", retain=0.5, scope="frame")
    for bad in ("threshold=1.5", "min_share=-0.1", "queries=-1", "cost=0.0"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            vtc.Pipeline.parse(f"framefusion({bad})")
    assert not vtc.is_wrapped(tm.model)


def test_without_a_budget_it_runs_on_the_official_cost() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(16)])
    with vtc.compressed(tm.model, "framefusion"), torch.no_grad():
        tm.model(**inputs)
        reached = tm.model.vtc_stats.flop_retention
    with vtc.compressed(tm.model, "framefusion", retain=0.3), torch.no_grad():
        tm.model(**inputs)
        assert tm.model.vtc_stats.flop_retention == reached


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_ranking_by_every_rows_attention_in_a_left_padded_batch_equals_one_by_one(family: str) -> None:
    """queries=0 averages over every query row: padding rows must not count (the generic batch oracle runs queries=1)."""
    tm = tiny(family)
    clips = tm.batch_clips()
    with vtc.compressed(tm.model, "framefusion(queries=0):0.5"), torch.no_grad():
        batched = tm.model(**tm.inputs(clips))
        stats = tm.model.vtc_stats
        singles = []
        for clip in clips:
            singles.append((tm.model(**tm.inputs([clip])).logits[0, -1], tm.model.vtc_stats))
    assert stats.tokens_kept[0] != stats.tokens_kept[1]
    for b, (logits, single) in enumerate(singles):
        assert single.kept_indices[0] == stats.kept_indices[b]
        for layer, kept in single.layer_kept_indices.items():
            assert stats.layer_kept_indices[layer][b] == kept[0]
        torch.testing.assert_close(batched.logits[b, -1], logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("retain", [0.5, 0.3, 0.1])
@pytest.mark.parametrize("size", list(SIZES))
def test_at_realistic_sizes_the_schedule_reaches_the_flop_budget(size: int, retain: float) -> None:
    """The parts of a 28-layer model run on video-like tokens (128, 3,136 and 12,544; no model, so features stay
    the same from layer to layer): the mean share of tokens the layers process is the budget, to within the one
    token that rounding the last count moves, or a note says merging overspent it."""
    tokens = video_tokens(*SIZES[size])
    processed, notes = [], []
    for part, _ in FrameFusion().parts(28, vtc.Budget(retain=retain)):
        selection = part.compress(tokens, vtc.Budget())
        tokens = tokens.subset(selection.keep, selection.features, selection.carry)
        processed.append(len(tokens) / size)
        notes += selection.notes
    reached = sum(processed) / len(processed)
    assert tokens.carry.phase == "done"
    if notes:
        assert reached > retain and "already processed more than the FLOP budget allows" in notes[0]
    else:
        assert abs(reached - retain) <= 1 / size
