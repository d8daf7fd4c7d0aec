"""The vtc plugin inside vLLM (CPU build) on the shipped reference model."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.integrations.vllm.config import exact_alternatives, parse
from vtc.integrations.vllm.saliency import video_saliency as plugin_saliency
from vtc.integrations.vllm.select import keep
from vtc.runner import build_inputs, default_model_path, load_model

from .helpers import engine, requests, split

NEW_TOKENS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return split(str(tmp_path_factory.mktemp("vllm_split")))


@pytest.fixture(scope="module")
def hf():
    return load_model(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def reqs(data, hf):
    return requests(data, hf[1])


def _generate(llm, batch):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, temperature=0.0, logprobs=2)
    return llm.generate(batch, params, use_tqdm=False)


def _model(llm):
    return llm.apply_model(lambda m: m)[0]


@pytest.fixture(scope="module")
def plain(reqs):
    llm = engine()
    out = _generate(llm, reqs[0])
    del llm
    return out


def test_retain_one_gives_plain_vllms_tokens_and_logprobs(reqs, plain) -> None:
    llm = engine({"method": "random", "retain": 1.0})
    out = _generate(llm, reqs[0])
    for a, b in zip(plain, out):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for la, lb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
            assert la.keys() == lb.keys()
            for token in la:
                assert la[token].logprob == pytest.approx(lb[token].logprob, abs=1e-4)


# k-medoids iterations turn the last float bits in which vLLM's and transformers' vision towers differ (~1e-5)
# into different medoids; for it the test holds the plugin's code to vtc.wrap's on the same features only.
FLOAT_SENSITIVE = {"centerclip"}


def test_each_exact_method_keeps_what_vtc_wrap_keeps(data, plain, hf) -> None:
    """One engine; the model's configuration is swapped per method (the selection reads nothing else). vLLM
    caches a video's encoder output by its content and prompts by prefix, so each method gets its own noisy
    copy of the videos (the noise also breaks the ties between equal tokens of the flat synthetic colours)."""
    model_hf, processor = hf
    llm = engine({"method": "random", "retain": 0.25}, enable_prefix_caching=False)
    model = _model(llm)
    chosen: list[list[int]] = []
    select = model._select
    model._select = lambda *a: (lambda r: (chosen.append(sorted(r[1].tolist())), r)[1])(select(*a))
    full = 8 * 4 * 4  # 16 frames of 112 px: 8 temporal groups of 4x4 merged tokens
    for seed, name in enumerate(exact_alternatives()):
        batch, videos, _ = requests(data, processor, noise=12, seed=seed)
        config = model.vtc = parse({"method": name, "retain": 0.25})
        kept = config.kept_count((8, 4, 4))
        for request, video, reference in zip(batch[:4], videos, plain):
            chosen.clear()
            hits = model.vtc_selections.hits
            out = _generate(llm, [request])[0]
            assert len(out.prompt_token_ids) == len(reference.prompt_token_ids) - (full - kept)
            assert len(chosen) == 1 and model.vtc_selections.hits == hits + 1, "embeddings reuse the positions' choice"
            inputs = build_inputs(processor, [video], ["q"])
            with vtc.compressed(model_hf, name, retain=0.25), torch.no_grad():
                model_hf(**inputs)
                wrapped = model_hf.vtc_stats.kept_indices[0]
            features, saliency = _transformers_features(model_hf, inputs)
            same_code = keep(config, features, (8, 4, 4), float(inputs["second_per_grid_ts"][0]), saliency)[1]
            assert sorted(same_code.tolist()) == wrapped, f"{name}: the plugin's code chose differently on the same features"
            if name not in FLOAT_SENSITIVE:
                assert chosen[0] == wrapped, f"{name}: vLLM kept {chosen[0]}, vtc.wrap {wrapped}"


def test_each_compressed_video_passes_the_vision_tower_once(reqs) -> None:
    """The positions call encodes and selects; the feature call of the same step takes that selection."""
    llm = engine({"method": "dtd", "retain": 0.25}, enable_prefix_caching=False)
    model = _model(llm)
    passes = []
    handle = model.visual.register_forward_hook(lambda *_: passes.append(1))
    hits, misses = model.vtc_selections.hits, model.vtc_selections.misses
    try:
        _generate(llm, reqs[0][:4])
    finally:
        handle.remove()
    assert len(passes) == 4
    assert (model.vtc_selections.hits - hits, model.vtc_selections.misses - misses) == (4, 0)
    assert len(model.vtc_selections) == 0


def _transformers_features(model_hf, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """One video's merged features and the ATS saliency vtc.wrap reads, from transformers' vision tower."""
    from vtc.patches import adapter_for

    saliency: list[torch.Tensor] = []
    removers = adapter_for(model_hf).record_vision_saliency(saliency.extend)
    try:
        with torch.no_grad():
            features = model_hf.model.get_video_features(
                pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
            ).pooler_output[0]
    finally:
        for remove in removers:
            remove()
    return features, saliency[0]


@pytest.mark.parametrize("upscale", [1, 2], ids=["112px", "224px"])
def test_vllms_tower_gives_the_saliency_transformers_tower_gives(data, hf, monkeypatch, upscale) -> None:
    """fastvid and holitom rank by the last block's ATS saliency: read from vLLM's tower while it serves a request
    (its processor's pixels: vLLM normalises them inside the tower), it is the saliency vtc.wrap reads. At 224 px a
    frame holds four attention windows, so the tower's window order is not the raster order."""
    import copy

    import numpy as np

    import vtc.integrations.vllm.qwen2_5_vl as plugin

    model_hf, processor = hf
    processor = copy.deepcopy(processor)
    size = {"longest_edge": (112 * upscale) ** 2, "shortest_edge": 3136}
    processor.video_processor.size = size
    read: list[tuple[torch.Tensor, torch.Tensor]] = []
    monkeypatch.setattr(plugin, "video_saliency", lambda *a: (lambda s: (read.append((a[1], s)), s)[1])(plugin_saliency(*a)))
    llm = engine({"method": "holitom", "retain": 0.25}, enable_prefix_caching=False, mm_processor_kwargs={"size": size})
    batch, videos, _ = requests(data, processor, noise=12)
    for request, video in zip(batch[:2], videos):
        video.frames = np.repeat(np.repeat(video.frames, upscale, axis=1), upscale, axis=2)
        request["multi_modal_data"]["video"] = [(video.frames, request["multi_modal_data"]["video"][0][1])]
        read.clear()
        _generate(llm, [request])
        inputs = build_inputs(processor, [video], ["q"])
        assert [int(v) for v in inputs["video_grid_thw"][0]] == [8, 8 * upscale, 8 * upscale]
        window_index, saliency = read[0]
        assert len(read) == 1 and bool((window_index != torch.arange(window_index.numel())).any()) == (upscale > 1)
        torch.testing.assert_close(saliency, _transformers_features(model_hf, inputs)[1], rtol=1e-3, atol=1e-6)


def _shorter(request: dict, frames: int) -> dict:
    """The request with only its first ``frames`` frames (a shorter video: fewer temporal groups)."""
    video, meta = request["multi_modal_data"]["video"][0]
    meta = {**meta, "total_num_frames": frames, "duration": frames / meta["fps"], "frames_indices": list(range(frames))}
    return {**request, "multi_modal_data": {"video": [(video[:frames], meta)]}}


def test_batch_of_eight_videos_of_different_lengths_answers_as_one_by_one(reqs, hf) -> None:
    batch = [_shorter(r, 8) if i % 2 else r for i, r in enumerate(reqs[0])]
    llm = engine({"method": "vidcom2", "retain": 0.25})
    together = _generate(llm, batch)
    alone = [_generate(llm, [r])[0] for r in batch]
    video_token = hf[0].config.video_token_id
    assert {o.prompt_token_ids.count(video_token) for o in together} == {32, 16}, "8 and 4 temporal groups at 25%"
    assert [o.outputs[0].token_ids for o in together] == [o.outputs[0].token_ids for o in alone]
    assert [o.prompt_token_ids for o in together] == [o.prompt_token_ids for o in alone]


@pytest.mark.parametrize("bad, message", [
    ({"method": "nope", "retain": 0.25}, "unknown method"),
    ({"method": "vidcom2"}, "placeholder run"),
    ({"method": "dtd(threshold=0.5)"}, "placeholder run"),
    ({"method": "pool", "retain": 0.25}, "placeholder run"),
    ({"method": "fastv", "retain": 0.5}, "prefill-stage methods only"),
])
def test_bad_config_fails_at_startup_naming_the_problem(bad, message) -> None:
    with pytest.raises(Exception) as err:
        engine(bad)
    assert message in str(err.value) or message in repr(err.value.__cause__)


def test_config_in_additional_config_is_refused_with_where_it_goes() -> None:
    from vllm import LLM

    from .helpers import ENGINE_ARGS

    with pytest.raises(Exception, match="hf_overrides"):
        LLM(model=str(default_model_path()), distributed_executor_backend="uni",
            additional_config={"vtc": {"method": "random", "retain": 0.25}}, **ENGINE_ARGS)
