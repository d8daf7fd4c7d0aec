"""The vLLM plugin's configuration and prompt positions, checked without vLLM (its engine tests: tests/vllm)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vtc.integrations.vllm.config import exact_alternatives, parse
from vtc.integrations.vllm.positions import MediaItem, grid_positions, prompt_positions
from vtc.runner import build_inputs, default_model_path, load_model
from vtc.video import DecodedVideo


def test_a_method_spec_string_or_mapping_sets_method_and_budget() -> None:
    assert parse({"method": "vidcom2", "retain": 0.25}).kept_count((8, 4, 4)) == 32
    assert parse("dtd:0.5").kept_count((8, 4, 4)) == 64
    assert parse({"method": "random", "tokens": 10}).kept_count((8, 4, 4)) == 10
    assert parse(None) is None


@pytest.mark.parametrize("raw, message", [
    ({"method": "nope", "retain": 0.25}, "unknown method"),
    ({"method": "vidcom2"}, "placeholder run"),
    ({"method": "dtd(threshold=0.5)"}, "placeholder run"),
    ({"method": "pool", "retain": 0.25}, "structured method"),
    ({"method": "dtd(mode=pixel)", "retain": 0.25}, "pixels"),
    ({"method": "holitom(inner_layer=2)", "retain": 0.25}, "layer part"),
    ({"method": "fastv", "retain": 0.5}, "prefill-stage methods only"),
    ({"method": "random", "retain": 0.25, "positions": "hf"}, "positions"),
    ({"method": "random", "retain": 0.25, "budget": 3}, "unknown config key"),
    ({"retain": 0.25}, "'method'"),
    (["random"], "mapping"),
])
def test_bad_configs_are_refused_naming_the_problem(raw, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse(raw)


def test_saliency_methods_run_and_are_refused_under_tensor_parallelism() -> None:
    """fastvid and holitom read the vision tower's last-block saliency (one head set per tensor-parallel rank)."""
    from types import SimpleNamespace

    from vtc.integrations.vllm.startup import startup_config

    assert {"fastvid", "holitom", "prunevid"} <= set(exact_alternatives())
    for name in ("fastvid", "holitom"):
        assert parse({"method": name, "retain": 0.25}).needs == {"vision_saliency"}

    def vllm_config(tp: int, method: str) -> SimpleNamespace:
        model = SimpleNamespace(hf_config=SimpleNamespace(vtc={"method": method, "retain": 0.25}), multimodal_config=None)
        return SimpleNamespace(additional_config={}, model_config=model, parallel_config=SimpleNamespace(tensor_parallel_size=tp))

    assert startup_config(vllm_config(1, "holitom")).needs == {"vision_saliency"}
    assert startup_config(vllm_config(2, "vidcom2")) is not None
    with pytest.raises(ValueError, match="tensor_parallel_size=1"):
        startup_config(vllm_config(2, "fastvid"))


def test_refusals_name_the_exact_budget_methods() -> None:
    with pytest.raises(ValueError) as err:
        parse({"method": "pool", "retain": 0.25})
    assert all(name in str(err.value) for name in exact_alternatives())


def _uncompressed(offset: int, t: int, h: int, w: int, t_factor: float) -> MediaItem:
    relative = grid_positions(t, h, w, t_factor)
    return MediaItem(offset, relative.shape[1], relative, h, w, relative)


def test_transformers_convention_is_transformers_get_rope_index() -> None:
    """The shipped model's prompt, positions and delta as transformers computes them (its own oracle)."""
    model, processor = load_model(default_model_path(), device="cpu")
    frames = np.random.default_rng(0).integers(0, 255, size=(16, 112, 112, 3), dtype=np.uint8)
    video = DecodedVideo(frames=frames, indices=np.arange(16), timestamps=np.arange(16) / 4.0, source_fps=4.0, total_frames=16,
                         backend="test", requested_frames=16, clamped=False)
    inputs = build_inputs(processor, [video], ["What colour is the object?"])
    expected, delta = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"], attention_mask=inputs["attention_mask"],
    )
    ids = inputs["input_ids"][0]
    offset = int((ids == model.config.video_token_id).nonzero()[0])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    t_factor = float(inputs["second_per_grid_ts"][0]) * model.config.vision_config.tokens_per_second
    positions, ours = prompt_positions(len(ids), [_uncompressed(offset, t, h // 2, w // 2, t_factor)], "transformers")
    assert np.array_equal(positions, expected[:, 0].numpy()) and ours == int(delta)
    vllm_style, _ = prompt_positions(len(ids), [_uncompressed(offset, t, h // 2, w // 2, t_factor)], "vllm")
    after = offset + t * (h // 2) * (w // 2)
    video_max = int(vllm_style[:, offset:after].max())
    assert vllm_style[0, after] == video_max + 1, "vLLM continues after the video's largest position"
    assert positions[0, after] < video_max, "transformers 5 continues inside the video's temporal range here"


def test_kept_tokens_keep_their_positions_and_decoding_continues_as_uncompressed() -> None:
    t, h, w = 8, 4, 4
    relative = grid_positions(t, h, w, 1.0)
    kept = np.sort(np.random.default_rng(1).choice(t * h * w, 32, replace=False))
    for convention in ("vllm", "transformers"):
        full, full_delta = prompt_positions(10 + 128 + 20, [_uncompressed(10, t, h, w, 1.0)], convention)
        short, delta = prompt_positions(10 + 32 + 20, [MediaItem(10, 32, relative, h, w, relative[:, kept])], convention)
        assert np.array_equal(short[:, 10:42], full[:, 10 + kept])
        assert np.array_equal(short[:, 42:], full[:, 138:]) and np.array_equal(short[:, :10], full[:, :10])
        assert delta + len(short[0]) == full_delta + len(full[0]), "the next position is the uncompressed prompt's"
