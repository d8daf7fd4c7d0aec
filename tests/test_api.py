"""wrap / unwrap / compressed, the registry, spec parsing and the errors users meet."""
from __future__ import annotations

import json

import pytest
import torch

import vtc
from vtc import Budget, Pipeline
from vtc.engine import cache_of
from vtc.methods.dtd import DTD
from vtc.methods.fastv import FastV

from .builders import cache_arg, tiny, video


def _hook_counts(model) -> dict[str, int]:
    counts = {}
    for name, module in model.named_modules():
        n = len(module._forward_pre_hooks) + len(module._forward_hooks)
        if n:
            counts[name] = n
    return counts


def test_unwrap_removes_every_hook_and_restores_attention() -> None:
    model = tiny("qwen2_5_vl").model
    before = _hook_counts(model)
    attn = model.model.language_model.config._attn_implementation
    vtc.wrap(model, "dtd:0.5>fastv@2:0.5")
    assert _hook_counts(model) != before
    assert model.model.language_model.config._attn_implementation == "vtc+" + attn
    vtc.unwrap(model)
    assert _hook_counts(model) == before
    assert model.model.language_model.config._attn_implementation == attn
    assert "get_video_features" not in vars(model.model)
    assert not any(hasattr(m, "_vtc_recorder") for m in model.modules())
    assert not vtc.is_wrapped(model) and not hasattr(model, "vtc_stats")
    vtc.unwrap(model)  # idempotent


@pytest.mark.parametrize("failing", ["install", "record_vision_saliency"])
def test_a_wrap_that_fails_half_way_leaves_no_hook_behind(monkeypatch, failing: str) -> None:
    """Hooks added before the failure are removed again, and the model answers as before."""
    from vtc.patches import adapter_for

    tm = tiny("qwen2_5_vl")
    model, inputs = tm.model, tm.inputs([video(8)])
    with torch.no_grad():
        reference = model(**inputs).logits
    before = _hook_counts(model)
    attn = model.model.language_model.config._attn_implementation

    def fail(*args, **kwargs):
        raise RuntimeError("adapter failed")

    monkeypatch.setattr(type(adapter_for(model)), failing, fail)
    with pytest.raises(RuntimeError, match="adapter failed"):
        vtc.wrap(model, "fastvid>fastv@2:0.5", retain=0.5)
    assert _hook_counts(model) == before
    assert model.model.language_model.config._attn_implementation == attn
    assert "get_video_features" not in vars(model.model)
    assert not any(hasattr(m, "_vtc_recorder") for m in model.modules())
    assert not vtc.is_wrapped(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference)


def test_a_family_without_the_layer_stage_refuses_layer_methods(monkeypatch) -> None:
    from vtc.patches import adapter_for

    model = tiny("qwen2_5_vl").model
    monkeypatch.setattr(type(adapter_for(model)), "supports_layer_stage", False)
    with pytest.raises(NotImplementedError, match="does not support layer-stage methods \\(fastv\\)"):
        vtc.wrap(model, "dtd:0.5>fastv@2:0.5")
    assert not vtc.is_wrapped(model)
    vtc.wrap(model, "dtd", retain=0.5)  # prefill methods still work
    vtc.unwrap(model)


def test_wrapping_twice_replaces_the_first_compression() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    vtc.wrap(tm.model, "random", retain=0.5)
    once = _hook_counts(tm.model)
    try:
        vtc.wrap(tm.model, "random", retain=0.25)
        assert _hook_counts(tm.model) == once
        with torch.no_grad():
            tm.model(**inputs)
        assert tm.model.vtc_stats.tokens_kept == [16]
    finally:
        vtc.unwrap(tm.model)


def test_compressed_context_restores_the_outer_compression() -> None:
    tm = tiny("qwen2_vl")
    inputs = tm.inputs([video(8)])
    vtc.wrap(tm.model, "random", retain=0.5)
    try:
        with vtc.compressed(tm.model, "random", retain=0.25), torch.no_grad():
            tm.model(**inputs)
            assert tm.model.vtc_stats.tokens_kept == [16]
        with torch.no_grad():
            tm.model(**inputs)
        assert tm.model.vtc_stats.tokens_kept == [32]
    finally:
        vtc.unwrap(tm.model)


def test_stats_record_tokens_time_and_serialise_to_json() -> None:
    tm = tiny("qwen3_vl")
    with vtc.compressed(tm.model, "dtd:0.5>fastv@2:0.5"), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        stats = tm.model.vtc_stats
    assert [s.method for s in stats.stages] == ["dtd", "fastv"]
    assert stats.stages[0].tokens_before == [64] and stats.stages[0].tokens_after == [32]
    assert stats.stages[1].layer == 2 and stats.stages[1].tokens_after == [16]
    assert all(s.ms >= 0 for s in stats.stages)
    # FLOP-equivalent: layers 0-1 see 32 of 64 tokens, layers 2-3 see 16.
    assert stats.flop_retention == pytest.approx((0.5 * 2 + 0.25 * 2) / 4)
    data = json.loads(stats.to_json())
    assert data["tokens_kept"] == [32] and data["layer_kept_indices"]["2"] == [stats.layer_kept_indices[2][0]]
    assert "dtd" in str(stats) and "retention" in str(stats)


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known methods: .*dtd, dycoke, dycoke-kv, dymu, evad, fastv"):
        vtc.get_method("holitomm")


def test_spec_parsing_builds_methods_budgets_and_layers() -> None:
    pipeline = Pipeline.parse("dtd(threshold=0.3,absolute=false)>fastv@3:0.25")
    first, second = pipeline.steps
    assert first.method == DTD(threshold=0.3, absolute=False) and first.budget is None
    assert second.method == FastV(layer=3) and second.budget == Budget(retain=0.25)
    assert Pipeline.parse("random:256").steps[0].budget == Budget(tokens=256)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fastv@2>dtd", "stage order"),
        ("dtd@2", "layer and cache methods only"),
        ("dtd(threshold)", "key=value"),
        ("fastv@3>fastv@2", "strictly increasing"),
        ("dtd(nonsense=1)", "dtd has no knob 'nonsense'"),
        ("random:1.5", "integer"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pipeline.parse(spec)


def test_method_without_budget_refuses_instead_of_keeping_everything() -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="needs a budget"):  # at wrap time, before any forward
        vtc.wrap(tm.model, "random")
    assert not vtc.is_wrapped(tm.model)


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="not both"):
        Budget(retain=0.5, tokens=10)
    with pytest.raises(ValueError, match="retain"):
        Budget(retain=0.0)
    assert Budget(retain=0.1).count(64) == 7 and Budget(tokens=100).count(64) == 64


def test_unsupported_model_names_the_supported_families() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

    from vtc.patches import supported_model_types

    text = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    image_only = LlavaForConditionalGeneration(LlavaConfig(
        text_config=dict(model_type="llama", **text),
        vision_config=dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
        image_token_index=31,
    ))
    supported = ", ".join(supported_model_types())
    assert "llava_onevision" in supported
    for model in (LlamaForCausalLM(LlamaConfig(**text)), image_only):
        with pytest.raises(ValueError, match=f"model_type '{model.config.model_type}'.*supported: {supported}"):
            vtc.wrap(model, "dtd")


def test_layer_outside_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match=r"must be in 1\.\.3"):
        vtc.wrap(tiny("qwen2_vl").model, "fastv@4:0.5")


def test_static_cache_is_refused() -> None:
    tm = tiny("qwen2_5_vl")
    with vtc.compressed(tm.model, "random:0.5"), pytest.raises(ValueError, match="static"):
        tm.model.generate(**tm.inputs([video(8)]), max_new_tokens=2, cache_implementation="static")


def test_new_video_on_an_existing_cache_is_refused() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "random:0.5"), torch.no_grad():
        out = tm.model(**inputs, use_cache=True)
        with pytest.raises(ValueError, match="existing KV cache"):
            tm.model(**inputs, **cache_arg(tm.model, cache_of(out)))


def test_grid_that_disagrees_with_the_prompt_raises() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    grid = inputs["video_grid_thw"].clone()
    grid[0, 0] = 2  # claims half the frames the prompt holds
    captured = {"video_grid_thw": grid}
    from vtc.patches import adapter_for

    visual = inputs["input_ids"] == tm.model.config.video_token_id
    with pytest.raises(ValueError, match="disagree|describe"):
        adapter_for(tm.model).layouts(captured, visual)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_prompt_without_video_beside_one_with_video(family: str) -> None:
    """The Qwen layouts give a text-only prompt in a video batch an empty layout (it crashed on torch.cat)."""
    tm = tiny(family)
    inputs = tm.inputs([[video(8)], []], ["What happens?", "Say hi"])
    with torch.no_grad():
        reference = tm.model(**inputs).logits
        with vtc.compressed(tm.model, "random", retain=1.0):
            assert torch.equal(tm.model(**inputs).logits, reference)
            assert tm.model.vtc_stats.visual_tokens[1] == 0
