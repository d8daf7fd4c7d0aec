"""The vision stage: what a method decides inside the tower is what the language model sees.

Oracles: (1) dropping merge units after block K of a Qwen tower equals the full tower whose later
blocks cannot attend to those units (their keys masked in eager attention); (2) what reaches the
language model equals the unwrapped model given the same video features with the dropped rows masked
out of attention at their original positions. Refusals say why.
"""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AttentionInterface

import vtc
from vtc.patches import adapter_for

from .builders import families_with, tiny, unsupported_stages, video
from .test_oracles import rope_positions, dropped_masked

VISION_FAMILIES = families_with("vision")
PURE = "visionzip(dominant=3, contextual=0)"  # 3 tokens of each frame (of 4 to 256), nothing merged


def _deeper_qwen25(layers: int, fullatt: list[int]):
    """The tiny Qwen2.5-VL with a deeper tower, so windowed blocks run after the cut."""
    tm = copy.copy(tiny("qwen2_5_vl"))
    config = copy.deepcopy(tm.model.config)
    config.vision_config.depth, config.vision_config.fullatt_block_indexes = layers, fullatt
    torch.manual_seed(3)
    tm.model = type(tm.model)(config).eval()
    return tm


def _tower_output(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    return torch.cat(out.pooler_output)


def _masked_tower(model, inputs, keep_units: torch.Tensor, layer: int) -> torch.Tensor:
    """The unwrapped tower in eager attention whose blocks after ``layer`` see only ``keep_units`` as keys."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import eager_attention_forward
    from transformers.vision_utils import get_vision_window_index

    visual = model.model.visual
    units = keep_units.numel()
    if model.config.model_type == "qwen2_5_vl":
        order, _ = get_vision_window_index(inputs["video_grid_thw"], visual.spatial_merge_size, visual.window_size,
                                           visual.patch_size)
    else:
        order = torch.arange(units)
    unit = visual.spatial_merge_size ** 2
    keep_rows = keep_units[order].repeat_interleave(unit)  # the tower's row order
    state = {"keep": None, "at": 0}

    def masked(module, query, key, value, attention_mask=None, **kwargs):
        n = key.shape[2]
        bias = torch.zeros(1, 1, 1, n)
        if state["keep"] is not None:
            # finite, so a window whose units were all dropped stays finite (its rows are never read)
            bias[..., ~state["keep"][state["at"]: state["at"] + n]] = -1e9
        state["at"] += n
        return eager_attention_forward(module, query, key, value, attention_mask=bias, **kwargs)

    def enter(index: int):
        def hook(*_):
            state["keep"], state["at"] = (keep_rows if index > layer else None), 0
        return hook

    AttentionInterface.register("vtc_test_key_mask", masked)
    handles = [blk.register_forward_pre_hook(enter(i)) for i, blk in enumerate(visual.blocks)]
    saved = visual.config._attn_implementation_internal
    visual.config._attn_implementation_internal = "vtc_test_key_mask"
    try:
        return _tower_output(model, inputs)
    finally:
        visual.config._attn_implementation_internal = saved
        for h in handles:
            h.remove()


@pytest.mark.parametrize("family,layers,fullatt,layer", [
    ("qwen2_vl", None, None, 0), ("qwen2_5_vl", None, None, 0), ("qwen2_5_vl", 4, [3], 0), ("qwen2_5_vl", 4, [1], 1),
    ("qwen3_vl", None, None, 0),
])
def test_dropping_units_in_the_tower_equals_masking_them_in_later_blocks(family, layers, fullatt, layer) -> None:
    tm = _deeper_qwen25(layers, fullatt) if layers else tiny(family)
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, PURE.replace(")", f", layer={layer})")):
        cut = _tower_output(tm.model, inputs)
        with torch.no_grad():
            tm.model(**inputs)
        kept = torch.tensor(tm.model.vtc_stats.kept_indices[0])
    keep = torch.zeros(cut.shape[0], dtype=torch.bool)
    keep[kept] = True
    assert 0 < keep.sum() < keep.numel()
    assert torch.equal(cut[~keep], torch.zeros_like(cut[~keep])), "dropped units are zeros at full length"
    oracle = _masked_tower(tm.model, inputs, keep, layer)
    torch.testing.assert_close(cut[keep], oracle[keep], rtol=1e-4, atol=1e-5)
    if family == "qwen3_vl":  # deepstack features after the cut follow the same rows
        assert tm.model.config.vision_config.deepstack_visual_indexes


@pytest.mark.parametrize("family", VISION_FAMILIES)
@pytest.mark.parametrize("spec", [PURE, "visionzip:0.3", "dymu:0.5"])
def test_language_model_sees_the_cut_features_at_their_original_positions(family: str, spec: str) -> None:
    """The wrapped model's last logits equal the unwrapped model fed the same (cut) video features with the
    dropped rows masked out of attention and every row at its original position."""
    if unsupported_stages(family, spec):
        pytest.skip(f"{family} does not run {spec} (checked in the conformance suite)")
    tm = tiny(family)
    inputs = tm.inputs(tm.batch_clips())
    base = tm.model.model
    name = adapter_for(tm.model).video_encoder  # get_video_features, or get_image_features (InternVL's frames)
    captured = {}
    with vtc.compressed(tm.model, spec), torch.no_grad():
        encoder = getattr(base, name)  # vtc's wrapper: keep what it returns

        def keep_output(*args, **kwargs):
            captured["out"] = encoder(*args, **kwargs)
            return captured["out"]

        setattr(base, name, keep_output)
        try:
            pruned = tm.model(**inputs).logits[:, -1]
        finally:
            setattr(base, name, encoder)
        stats = tm.model.vtc_stats
    assert stats.stages[0].stage == "vision" and sum(stats.tokens_kept) < sum(stats.visual_tokens)
    mask = dropped_masked(tm, inputs, stats.kept_indices)
    setattr(base, name, lambda *a, **k: captured["out"])
    try:
        with torch.no_grad():
            masked = tm.model(**{**inputs, "attention_mask": mask,
                                 "position_ids": rope_positions(tm.model, inputs)}).logits[:, -1]
    finally:
        delattr(base, name)
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_merged_tokens_are_recorded_with_their_targets(family: str) -> None:
    tm = tiny(family)
    with vtc.compressed(tm.model, "visionzip(dominant=2, contextual=1)"), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        stats = tm.model.vtc_stats
    kept = set(stats.kept_indices[0])
    merged_into = stats.merged_into[0]
    assert all(m in kept for m in merged_into), "every token is kept or merged into a kept token (contextual > 0)"
    assert any(m != i for i, m in enumerate(merged_into))


def test_families_without_a_vision_stage_say_why() -> None:
    tm = tiny("video_llama_3")
    wrapped = False
    try:
        with pytest.raises(NotImplementedError, match="cannot run vision-stage methods: its own token compression"):
            vtc.wrap(tm.model, "visionzip:0.5")
    finally:
        wrapped = vtc.is_wrapped(tm.model)
        if wrapped:  # never leave the shared tiny model wrapped for later tests
            vtc.unwrap(tm.model)
    assert not wrapped


def test_vision_stage_refuses_prefill_methods_that_read_the_tower() -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="fastvid.*already shortened"):
        vtc.wrap(tm.model, "visionzip:0.5>fastvid:0.5")
    assert not vtc.is_wrapped(tm.model)


def test_vision_layer_outside_the_tower_is_refused() -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="vision layer 7 is outside this 2-block tower"):
        vtc.wrap(tm.model, "visionzip(layer=7):0.5")
    assert not vtc.is_wrapped(tm.model)


def test_composes_with_select_and_layer_stages() -> None:
    tm = tiny("qwen2_5_vl")
    with vtc.compressed(tm.model, "uniform-frames:0.5>visionzip:0.5>fastv@2:0.5"), torch.no_grad():
        out = tm.model.generate(**tm.inputs([video(8)]), max_new_tokens=2, do_sample=False)
        stats = tm.model.vtc_stats
    assert [s.stage for s in stats.stages][:2] == ["select", "vision"]
    assert stats.stages[1].tokens_before == [32] and stats.stages[1].tokens_after == [16]
    assert out.shape[1] > 0


@pytest.mark.parametrize("spec", ["visionzip:0.5", "dymu:0.5"])
def test_runs_in_bfloat16(spec: str) -> None:
    """The dtype path a GPU user takes: merged features go back to the tower's dtype."""
    tm = tiny("qwen2_5_vl")
    model = copy.deepcopy(tm.model).to(torch.bfloat16)
    inputs = tm.inputs([video(8)])
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(torch.bfloat16)
    with vtc.compressed(model, spec), torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        stats = model.vtc_stats
    assert stats.tokens_kept == [32] and out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_internvl_decides_frame_by_frame_and_refuses_a_video_level_token_count() -> None:
    tm = tiny("internvl")
    with pytest.raises(ValueError, match="decides frame by frame"):
        vtc.wrap(tm.model, "visionzip", tokens=20)
    assert not vtc.is_wrapped(tm.model)
    with vtc.compressed(tm.model, "visionzip:0.3"), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        stats = tm.model.vtc_stats
    frames, per_frame = 8, 16
    assert stats.tokens_kept == [frames * 5], "ceil(0.3 x 16) = 5 tokens in each frame"
