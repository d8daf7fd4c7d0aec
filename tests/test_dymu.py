"""DyMU (DToMe) in the Qwen towers: the matching rule, proportional attention, the merge arithmetic against the
unwrapped tower, fixed counts, and thresholds estimated from unlabeled videos."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import vtc
from vtc.attention import sized_name
from vtc.dymu_thresholds import estimate
from vtc.methods.dymu import THRESHOLDS_FILE, bipartite_pairs

from .builders import tiny, video, write_mp4


def test_matching_pairs_even_tokens_with_their_most_similar_odd_token() -> None:
    keys = torch.eye(8)
    keys[0], keys[2] = keys[3].clone(), keys[5] + 0.5 * keys[2]  # 0 ~ 3 (cos 1), 2 ~ 5 (cos 0.89); 4, 6 alone
    src, dst, best = bipartite_pairs(keys, limit=None, threshold=0.5)
    assert src.tolist() == [0, 2] and dst.tolist() == [3, 5]
    assert best.shape == (4,) and best[0] == pytest.approx(1.0)
    src, dst, _ = bipartite_pairs(keys, limit=1, threshold=None)
    assert src.tolist() == [0] and dst.tolist() == [3], "a fixed count takes the most similar pairs first"
    src, _, _ = bipartite_pairs(torch.ones(5, 3), limit=None, threshold=-1.0)
    assert src.numel() == 2, "at most half the tokens merge (ToMe)"


def test_proportional_attention_equals_attending_to_duplicated_keys() -> None:
    """A key of size 2 (log 2 added to its logit) weighs like two copies of it (ToMe's proportional attention)."""
    torch.manual_seed(0)
    module = nn.Module()
    module.is_causal = False
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    sizes = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0])
    module._vtc_key_bias, module._vtc_cursor = sizes.log(), 0
    sized, _ = ALL_ATTENTION_FUNCTIONS[sized_name("sdpa")](module, q, k, v, None, scaling=8 ** -0.5)
    copies = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4])
    plain, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k[:, :, copies], v[:, :, copies], None, scaling=8 ** -0.5)
    torch.testing.assert_close(sized, plain, rtol=1e-5, atol=1e-6)
    assert module._vtc_cursor == 5, "the cursor walks the packed sequence segment by segment"


def _write_thresholds(path, values) -> str:
    path.write_text(json.dumps({"method": "dymu", "thresholds": values}))
    return str(path)


def test_merging_in_the_last_block_is_the_size_weighted_average_of_the_unwrapped_tower(tmp_path) -> None:
    """Thresholds that forbid merging in block 0 and allow it in block 1: survivors' features equal the
    unwrapped tower's post-attention states of block 1 averaged over each merged group, then its MLP and
    the patch merger."""
    tm = tiny("qwen2_vl")  # raster-ordered tower: unit u is rows 4u..4u+3
    inputs = tm.inputs([video(8)])
    visual = tm.model.model.visual
    last = visual.blocks[-1]
    seen = {}
    handles = [last.register_forward_pre_hook(lambda _m, args, kwargs: seen.update(x=args[0] if args else kwargs["hidden_states"]), with_kwargs=True),
               last.attn.register_forward_hook(lambda _m, _a, out: seen.update(attn=out))]
    try:
        with torch.no_grad():
            tm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    finally:
        for h in handles:
            h.remove()
    after_attention = (seen["x"] + seen["attn"]).view(-1, 4, seen["x"].shape[-1])

    spec = f"dymu(thresholds='{_write_thresholds(tmp_path / 't.json', [2.0, -1.0])}')"
    captured = {}
    with vtc.compressed(tm.model, spec), torch.no_grad():
        encoder = tm.model.model.get_video_features
        tm.model.model.get_video_features = lambda *a, **k: captured.setdefault("out", encoder(*a, **k))
        try:
            tm.model(**inputs)
        finally:
            tm.model.model.get_video_features = encoder
        stats = tm.model.vtc_stats
    merged_into = torch.tensor(stats.merged_into[0])
    kept = torch.tensor(stats.kept_indices[0])
    assert kept.numel() == merged_into.numel() // 2, "with a threshold below every similarity, half the units merge"
    expected = []
    for unit in kept.tolist():
        group = (merged_into == unit).nonzero().flatten()
        state = after_attention[group].mean(dim=0)
        expected.append(state + last.mlp(last.norm2(state)))
    with torch.no_grad():
        want = visual.merger(torch.cat(expected))
    got = torch.cat(captured["out"].pooler_output)
    torch.testing.assert_close(got[kept], want, rtol=1e-4, atol=1e-5)
    merged_away = merged_into != torch.arange(merged_into.numel())
    assert torch.equal(got[merged_away], torch.zeros_like(got[merged_away])), "merged-away units are zeros"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_fixed_count_merges_r_per_block_within_frame_groups(family: str) -> None:
    tm = tiny(family)
    with vtc.compressed(tm.model, "dymu(r=3)"), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        stats = tm.model.vtc_stats
    frames, per_frame = 4, 16  # 8 frames / temporal patch 2; 112 px -> 4 x 4 units
    assert stats.tokens_kept == [frames * (per_frame - 3 * 2)]
    merged_into = stats.merged_into[0]
    assert all(i // per_frame == m // per_frame for i, m in enumerate(merged_into)), "merges stay in a frame group"


def test_a_budget_out_of_reach_merges_all_it_can_and_says_so() -> None:
    tm = tiny("qwen2_5_vl")
    with vtc.compressed(tm.model, "dymu:0.1"), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        stats = tm.model.vtc_stats
    assert stats.tokens_kept == [16], "two blocks keep a quarter of each frame at best"
    assert any("budget missed" in n for n in stats.stages[0].notes)


def test_thresholds_estimated_from_videos_are_found_beside_the_model(tmp_path) -> None:
    tm = tiny("qwen2_5_vl")
    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"v{seed}.mp4")
        write_mp4(paths[-1], video(8, seed=seed))
    result = estimate(tm.model, tm.processor, [str(p) for p in paths], retain=0.5, num_frames=8)
    assert len(result["thresholds"]) == 2 and all(0.0 <= t <= 1.0 for t in result["thresholds"])
    (tmp_path / THRESHOLDS_FILE).write_text(json.dumps(result))
    saved = tm.model.config._name_or_path
    tm.model.config._name_or_path = str(tmp_path)
    try:
        with vtc.compressed(tm.model, "dymu"), torch.no_grad():
            tm.model(**tm.inputs([video(8, seed=0)]))
            kept = tm.model.vtc_stats.tokens_kept[0]
    finally:
        tm.model.config._name_or_path = saved
    assert 0.3 * 64 <= kept <= 0.7 * 64, f"thresholds for retain 0.5 kept {kept} of 64 on a video they came from"


def test_missing_thresholds_name_the_command(tmp_path) -> None:
    tm = tiny("qwen2_5_vl")
    saved = tm.model.config._name_or_path
    tm.model.config._name_or_path = str(tmp_path)
    try:
        with pytest.raises(ValueError, match="vtc dymu-thresholds MODEL_DIR"):
            vtc.wrap(tm.model, "dymu")
    finally:
        tm.model.config._name_or_path = saved
    assert not vtc.is_wrapped(tm.model)


def test_flash_attention_refuses_proportional_attention() -> None:
    tm = tiny("qwen2_5_vl")
    config = tm.model.model.visual.config
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="flash-attention's varlen kernel"):
            vtc.wrap(tm.model, "dymu:0.5")
    finally:
        config._attn_implementation_internal = saved
    assert not vtc.is_wrapped(tm.model)


def test_video_llava_refuses_dymu_naming_why() -> None:
    tm = tiny("video_llava")
    with pytest.raises(NotImplementedError, match="cannot run dymu: it acts in every block"):
        vtc.wrap(tm.model, "dymu:0.5")
    assert not vtc.is_wrapped(tm.model)


def test_the_command_is_registered_and_refuses_a_hub_id(capsys) -> None:
    from vtc.cli import build_parser, main

    args = build_parser().parse_args(["dymu-thresholds", "some/model", "a.mp4", "b.mp4", "--retain", "0.25"])
    assert args.videos == ["a.mp4", "b.mp4"] and args.retain == 0.25
    assert main(["dymu-thresholds", "Qwen/Qwen2.5-VL-7B-Instruct", "a.mp4"]) == 2
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in capsys.readouterr().err
