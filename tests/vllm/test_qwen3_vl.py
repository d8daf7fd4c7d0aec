"""The vtc plugin inside vLLM (CPU build) on a tiny random Qwen3-VL saved to a temporary folder.

Qwen3-VL interleaves each frame's timestamp text with its tokens and feeds deepstack features to early layers,
so besides the kept indices these tests compare the first answer token's logprobs with transformers': equal
logprobs mean the same rows, in the same layout, at the same positions, with the same deepstack features.
"""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.integrations.vllm.config import exact_alternatives, parse
from vtc.integrations.vllm.select import keep

from .helpers import ENGINE_ARGS
from .tiny_qwen3_vl import clip, hf_inputs, request, save_tiny_qwen3_vl

FULL = 4 * 4 * 4  # 8 frames of 128 px: 4 temporal groups of 4x4 merged tokens
# vLLM's and transformers' towers agree to ~1e-7 on this checkpoint, and their first-token logprobs to ~5e-7.
LOGPROB_TOLERANCE = 1e-4
# k-medoids iterations turn those last float bits into different medoids; for it the test holds the plugin's code
# to vtc.wrap's on transformers' own features instead.
FLOAT_SENSITIVE = {"centerclip"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny_qwen3_vl"))


@pytest.fixture(scope="module")
def hf(checkpoint):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(checkpoint)


def _engine(checkpoint, vtc_config: dict | None = None, **kwargs):
    from vllm import LLM

    overrides = {} if vtc_config is None else {"hf_overrides": {"vtc": vtc_config}}
    return LLM(model=str(checkpoint), distributed_executor_backend="uni", **{**ENGINE_ARGS, "max_model_len": 2048},
               **overrides, **kwargs)


def _generate(llm, batch, tokens: int = 4):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0, logprobs=3)
    return llm.generate(batch, params, use_tqdm=False)


def _model(llm):
    return llm.apply_model(lambda m: m)[0]


def _batch() -> list[dict]:
    """Four requests: clips of 8 and 4 frames (4 and 2 temporal groups)."""
    return [request(clip(8 if i % 2 == 0 else 4, seed=i)) for i in range(4)]


def _assert_same_logprobs(a, b) -> None:
    for la, lb in zip(a, b):
        assert la.keys() == lb.keys()
        for token in la:
            assert la[token].logprob == pytest.approx(lb[token].logprob, abs=LOGPROB_TOLERANCE)


def test_plain_vllm_answers_as_transformers_on_the_tiny_checkpoint(checkpoint, hf) -> None:
    """The premise of the comparisons below: without vtc, vLLM's Qwen3-VL and transformers' agree here."""
    model, processor = hf
    frames = clip(8, seed=0)
    out = _generate(_engine(checkpoint), [request(frames)], tokens=1)[0]
    inputs = hf_inputs(processor, frames)
    assert out.prompt_token_ids == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        reference = torch.log_softmax(model(**inputs).logits[0, -1].float(), -1)
    for token, logprob in out.outputs[0].logprobs[0].items():
        assert logprob.logprob == pytest.approx(reference[token].item(), abs=LOGPROB_TOLERANCE)


def test_retain_one_gives_plain_vllms_tokens_and_logprobs(checkpoint) -> None:
    """The prompt holds the same tokens; its video placeholders sit together in the first frame (the run is
    sized before the method runs), while the language model sees every frame's tokens in their own frame."""
    plain = _generate(_engine(checkpoint), _batch())
    kept_all = _generate(_engine(checkpoint, {"method": "random", "retain": 1.0}), _batch())
    for a, b in zip(plain, kept_all):
        assert sorted(a.prompt_token_ids) == sorted(b.prompt_token_ids)
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        _assert_same_logprobs(a.outputs[0].logprobs, b.outputs[0].logprobs)


def test_each_exact_method_keeps_and_answers_what_vtc_wrap_does(checkpoint, hf) -> None:
    """One engine; the configuration is swapped per method in the model and in the config the prompt processor
    reads (the same object in-process), and each method gets its own clip so no cache answers for it."""
    model_hf, processor = hf
    llm = _engine(checkpoint, {"method": "random", "retain": 0.25}, enable_prefix_caching=False)
    model = _model(llm)
    chosen: list[list[int]] = []
    select = model._select
    model._select = lambda *a: (lambda r: (chosen.append(r[1].tolist()), r)[1])(select(*a))
    for seed, name in enumerate(exact_alternatives()):
        raw = {"method": name, "retain": 0.25}
        model.config.vtc, model.vtc = raw, parse(raw)
        frames = clip(8, seed=100 + seed)
        chosen.clear()
        out = _generate(llm, [request(frames)], tokens=1)[0]
        inputs = hf_inputs(processor, frames)
        assert len(out.prompt_token_ids) == inputs["input_ids"].shape[1] - (FULL - model.vtc.kept_count((4, 4, 4)))
        with vtc.compressed(model_hf, name, retain=0.25), torch.no_grad():
            reference = torch.log_softmax(model_hf(**inputs).logits[0, -1].float(), -1)
            wrapped = model_hf.vtc_stats.kept_indices[0]
        if name in FLOAT_SENSITIVE:
            with torch.no_grad():
                features = model_hf.model.get_video_features(
                    pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
                ).pooler_output[0]
            assert keep(model.vtc, features, (4, 4, 4), 1.0)[1].tolist() == wrapped, f"{name}: the plugin's code chose differently"
            continue
        assert chosen == [wrapped], f"{name}: vLLM kept {chosen}, vtc.wrap {wrapped}"
        for token, logprob in out.outputs[0].logprobs[0].items():
            assert logprob.logprob == pytest.approx(reference[token].item(), abs=LOGPROB_TOLERANCE), name


def test_batch_of_videos_of_different_lengths_answers_as_one_by_one_with_one_tower_pass_each(checkpoint) -> None:
    llm = _engine(checkpoint, {"method": "vidcom2", "retain": 0.25}, enable_prefix_caching=False)
    model = _model(llm)
    passes: list[int] = []
    handle = model.visual.register_forward_hook(lambda *_: passes.append(1))
    try:
        together = _generate(llm, _batch())
    finally:
        handle.remove()
    assert len(passes) == 4 and (model.vtc_selections.hits, model.vtc_selections.misses) == (4, 0)
    video_token = model.config.video_token_id
    assert [o.prompt_token_ids.count(video_token) for o in together] == [16, 8, 16, 8]
    alone = [_generate(llm, [r])[0] for r in _batch()]
    for a, b in zip(together, alone):
        assert a.prompt_token_ids == b.prompt_token_ids and a.outputs[0].token_ids == b.outputs[0].token_ids
        _assert_same_logprobs(a.outputs[0].logprobs, b.outputs[0].logprobs)


@pytest.mark.parametrize("bad, message", [
    ({"method": "nope", "retain": 0.25}, "unknown method"),
    ({"method": "dtd(threshold=0.5)"}, "placeholder run"),
    ({"method": "fastv", "retain": 0.5}, "prefill-stage methods only"),
])
def test_bad_config_fails_at_startup_naming_the_problem(checkpoint, bad, message) -> None:
    with pytest.raises(Exception) as err:
        _engine(checkpoint, bad)
    assert message in str(err.value) or message in repr(err.value.__cause__)


def test_config_in_additional_config_is_refused_with_where_it_goes(checkpoint) -> None:
    from vllm import LLM

    with pytest.raises(Exception, match="hf_overrides"):
        LLM(model=str(checkpoint), distributed_executor_backend="uni",
            additional_config={"vtc": {"method": "random", "retain": 0.25}}, **{**ENGINE_ARGS, "max_model_len": 2048})
