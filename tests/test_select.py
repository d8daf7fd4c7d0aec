"""Stage "select": frame choice before the encoder, through vtc.wrap and through vtc.VideoProcessor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vtc
from vtc.runner import build_inputs
from vtc.select.decode import decode_frames
from vtc.video import DecodedVideo

from .builders import STACKED_VIDEO_FAMILIES, families_with, tiny, video, write_mp4

SELECT_FAMILIES = families_with("select")

FLASH = 13  # source frame of a one-frame white flash in a 32-frame, 4 fps clip


@pytest.fixture(scope="module")
def flash_mp4(tmp_path_factory) -> str:
    frames = video(32, size=112, static=1.0)
    frames[FLASH] = 255
    path = tmp_path_factory.mktemp("select") / "flash.mp4"
    write_mp4(path, frames, fps=4)
    return str(path)


def _processor(family: str, select: str, **kwargs):
    tm = tiny(family)
    return tm, vtc.VideoProcessor(tm.processor, select, model=tm.model, candidate_fps=4, **kwargs)


# -- the flash: keyframes and keyclips find it, uniform at the same budget misses it -------------------
@pytest.mark.parametrize("select", ["keyframes", "keyclips(relevance=novelty,clip_length=2)"])
def test_flash_frame_is_selected_where_uniform_misses_it(flash_mp4: str, select: str) -> None:
    budget = dict(tokens=64, scales=(1.0,))  # 4 frame groups of 16 tokens at full resolution
    _, uniform = _processor("qwen2_5_vl", "uniform-frames", **budget)
    _, chosen = _processor("qwen2_5_vl", select, **budget)
    missed = uniform([flash_mp4], ["What flashed?"])
    found = chosen([flash_mp4], ["What flashed?"])
    assert FLASH not in missed.vtc_selection.selected_frames[0]
    assert FLASH in found.vtc_selection.selected_frames[0]
    assert found.vtc_selection.visual_tokens[0] <= 64


@pytest.mark.parametrize("family", SELECT_FAMILIES)
def test_keyframes_inside_wrap_keep_the_flash_group(family: str) -> None:
    tm = tiny(family)
    clip = video(16, static=1.0)
    clip[9] = 255
    inputs = tm.inputs([clip])
    for spec, expect in (("keyframes(context_share=0):0.25", True), ("uniform-frames:0.25", False)):
        with vtc.compressed(tm.model, spec), torch.no_grad():
            tm.model(**inputs)
            selected = tm.model.vtc_stats.selected_frames[0]
        assert (9 in selected) is expect, spec


# -- positions: the model's own ids for those frames at their true times ----------------------------
def _full_video_inputs(tm, path: str, size: tuple[int, int]):
    """The whole 32-frame clip through the model's own processor (every frame, real metadata)."""
    frames = decode_frames(path, list(range(32)), *size)
    clip = DecodedVideo(frames=frames, timestamps=np.arange(32) / 4.0, indices=np.arange(32), source_fps=4.0,
                        total_frames=32, backend="decord", requested_frames=None, clamped=False)
    return build_inputs(tm.processor, [clip], ["What flashed?"])


def test_qwen25_uneven_selection_gets_the_models_positions_at_true_times(flash_mp4: str) -> None:
    tm, processor = _processor("qwen2_5_vl", "keyframes", tokens=64, scales=(1.0,))
    selected = processor([flash_mp4], ["What flashed?"])
    groups = [f // 2 for f in selected.vtc_selection.selected_frames[0][::2]]
    gaps = set(np.diff(groups).tolist())
    assert len(gaps) > 1, f"the test needs an uneven selection, got groups {groups}"

    full = _full_video_inputs(tm, flash_mp4, (112, 112))
    oracle, _ = tm.model.model.get_rope_index(
        full["input_ids"], mm_token_type_ids=full["mm_token_type_ids"], video_grid_thw=full["video_grid_thw"],
        second_per_grid_ts=full["second_per_grid_ts"], attention_mask=full["attention_mask"],
    )
    video_id = tm.model.config.video_token_id
    rows_full = (full["input_ids"][0] == video_id).nonzero().flatten()
    per_group = rows_full.numel() // 16
    kept = torch.ones(full["input_ids"].shape[1], dtype=torch.bool)
    kept[rows_full] = False
    for g in groups:
        kept[rows_full[g * per_group : (g + 1) * per_group]] = True
    assert torch.equal(selected["position_ids"][1:, 0], oracle[:, 0, kept])

    mask = full["attention_mask"].clone()
    mask[0, ~kept] = 0
    with torch.no_grad():
        got = tm.model(**selected).logits[0, -1]
        want = tm.model(**{**full, "attention_mask": mask, "position_ids": oracle}).logits[0, -1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        out = tm.model.generate(**selected, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == selected["input_ids"].shape[1] + 4


def test_qwen3_timestamps_come_from_the_source_frames(flash_mp4: str) -> None:
    tm, processor = _processor("qwen3_vl", "keyframes", tokens=64, scales=(1.0,))
    inputs = processor([flash_mp4], ["What flashed?"])
    prompt = tm.processor.tokenizer.decode(inputs["input_ids"][0])
    for first in inputs.vtc_selection.selected_frames[0][::2]:
        assert f"<{(first + 0.5) / 4.0:.1f} seconds>" in prompt


# -- budgets, resolution trade, composition, identity ---------------------------------------------
@pytest.mark.parametrize("select", ["uniform-frames", "fps", "keyframes", "keyclips", "query", "scenes"])
@pytest.mark.parametrize("tokens", [16, 40, 100])
def test_processor_meets_the_token_budget(flash_mp4: str, select: str, tokens: int) -> None:
    _, processor = _processor("qwen2_5_vl", select, tokens=tokens)
    record = processor([flash_mp4], ["What flashed?"]).vtc_selection
    assert 0 < record.visual_tokens[0] <= tokens


def test_keyclips_lowers_resolution_to_fit_longer_clips(flash_mp4: str) -> None:
    _, processor = _processor("qwen2_5_vl", "keyclips(relevance=novelty,clip_length=4)", tokens=64)
    inputs = processor([flash_mp4], ["What flashed?"])
    record = inputs.vtc_selection
    assert record.scale[0] < 1.0
    assert len(record.selected_frames[0]) > 64 // 16 * 2, "more frames than full resolution affords"
    _, h, w = inputs["video_grid_thw"][0].tolist()
    assert h * w // 4 < 16
    assert record.visual_tokens[0] <= 64


@pytest.mark.parametrize("family", SELECT_FAMILIES)
def test_select_composes_with_prefill_and_layer_steps(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(16)])
    with vtc.compressed(tm.model, "keyclips(relevance=novelty,clip_length=2):0.5>dtd:0.5>fastv@2:0.5"), torch.no_grad():
        tm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        stats = tm.model.vtc_stats
    select, dtd, fastv = stats.stages
    assert (select.stage, dtd.stage, fastv.stage) == ("select", "prefill", "layer")
    assert select.tokens_after == dtd.tokens_before and dtd.tokens_after == fastv.tokens_before
    assert select.tokens_after[0] <= stats.visual_tokens[0] // 2
    assert set(stats.layer_kept_indices[2][0]) <= set(stats.kept_indices[0])


def _one_video_per_prompt(family: str) -> list[np.ndarray]:
    """Two prompts of one video each (the select stage takes one video per prompt); different lengths
    where the family's processor can batch them."""
    return [video(8), video(8 if family in STACKED_VIDEO_FAMILIES else 4, seed=1)]


def _masked_reference(tm, inputs, kept_indices):
    from .test_oracles import rope_positions, dropped_masked

    mask = dropped_masked(tm, inputs, kept_indices)
    with torch.no_grad():
        return tm.model(**{**inputs, "attention_mask": mask, "position_ids": rope_positions(tm.model, inputs)}).logits[:, -1]


@pytest.mark.parametrize("family", SELECT_FAMILIES)
@pytest.mark.parametrize("spec", ["uniform-frames:0.5", "keyframes:0.5", "scenes:0.5", "query:0.5",
                                  "keyclips(relevance=novelty,clip_length=1):0.5>dtd:0.5"])
def test_selection_equals_full_video_with_unselected_frames_masked(family: str, spec: str) -> None:
    """Kept frame groups keep their true position ids and the features a full encoding gives them."""
    tm = tiny(family)
    inputs = tm.inputs(_one_video_per_prompt(family))
    with vtc.compressed(tm.model, spec), torch.no_grad():
        pruned = tm.model(**inputs).logits[:, -1]
        kept, total = tm.model.vtc_stats.kept_indices, tm.model.vtc_stats.visual_tokens
    assert sum(map(len, kept)) < sum(total)
    torch.testing.assert_close(pruned, _masked_reference(tm, inputs, kept), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", SELECT_FAMILIES)
@pytest.mark.parametrize("spec", ["uniform-frames:1.0", "keyframes(context_share=0):1.0", "query(duplicate=1.0):1.0>fastv@2:1.0"])
def test_retain_one_selection_is_bit_identical(family: str, spec: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs(_one_video_per_prompt(family))
    with torch.no_grad():
        reference = tm.model(**inputs).logits
    with vtc.compressed(tm.model, spec), torch.no_grad():
        logits = tm.model(**inputs).logits
    assert torch.equal(logits, reference)


def test_pixel_selectors_encode_only_the_chosen_frames() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(16)])
    seen: list[int] = []
    hook = tm.model.model.visual.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        with vtc.compressed(tm.model, "keyframes(context_share=0):0.25"), torch.no_grad():
            tm.model(**inputs)
        with vtc.compressed(tm.model, "query:0.25"), torch.no_grad():
            tm.model(**inputs)
    finally:
        hook.remove()
    full = inputs["pixel_values_videos"].shape[0]
    assert seen == [full // 4, full], "keyframes encodes 2 of 8 groups; query must see every group first"


def test_smolvlm_encodes_only_the_chosen_frames_inside_generate() -> None:
    """generate() encodes before any forward sees the prompt: the chosen frames come from pixel_values' rows."""
    tm = tiny("smolvlm")
    inputs = tm.inputs([video(8)])
    seen: list[int] = []
    hook = tm.model.model.vision_model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["pixel_values"]).shape[0]), with_kwargs=True)
    try:
        with vtc.compressed(tm.model, "keyframes(context_share=0):0.25"), torch.no_grad():
            tm.model.generate(**inputs, max_new_tokens=2, do_sample=False)
            kept = tm.model.vtc_stats.selected_frames[0]
    finally:
        hook.remove()
    assert seen == [len(kept)] and len(kept) == 2, "keyframes keeps 2 of 8 frames and the tower encodes only those"


# -- stats ---------------------------------------------------------------------------------------
def test_stats_record_frames_times_and_scene_starts() -> None:
    tm = tiny("qwen2_5_vl")
    first = video(8, seed=0, static=1.0)
    second = video(8, seed=5, static=1.0) // 4  # a darker scene: thumbnails average noise away, not brightness
    inputs = tm.inputs([np.concatenate([first, second])])  # a hard cut at frame 8 (group 4), 2 fps
    with vtc.compressed(tm.model, "scenes:0.25"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert stats.scenes[0] == [0, 4]
    groups = sorted({f // 2 for f in stats.selected_frames[0]})
    assert any(g < 4 for g in groups) and any(g >= 4 for g in groups), "each scene keeps a group"
    assert stats.selected_frames[0] == [f for g in groups for f in (2 * g, 2 * g + 1)]
    assert stats.selected_times[0] == pytest.approx([float(g) for g in groups])  # 2 frames per group at 2 fps
    assert stats.to_dict()["selected_frames"] == stats.selected_frames


def test_processor_selection_reaches_the_stats_of_a_wrapped_model(flash_mp4: str) -> None:
    tm, processor = _processor("qwen2_5_vl", "scenes", tokens=64, scales=(1.0,))
    attributes = set(vars(tm.model))
    inputs = processor([flash_mp4], ["What flashed?"])
    assert set(vars(tm.model)) == attributes, "the record is kept beside the model, not on it"
    with vtc.compressed(tm.model, "dtd:0.5"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert set(vars(tm.model)) == attributes, "unwrap leaves the model as it was"
    assert stats.selected_frames == inputs.vtc_selection.selected_frames
    assert stats.selected_times == inputs.vtc_selection.selected_times
    assert stats.scenes == inputs.vtc_selection.scenes and len(stats.scenes[0]) > 1


def test_processor_selection_reaches_every_beam_in_the_stats(flash_mp4: str) -> None:
    """generate() runs one row per beam: each row's stats carry the frames its prompt was built from."""
    tm, processor = _processor("qwen2_5_vl", "scenes", tokens=64, scales=(1.0,))
    inputs = processor([flash_mp4], ["What flashed?"])
    with vtc.compressed(tm.model, "dtd:0.5"), torch.no_grad():
        tm.model.generate(**inputs, max_new_tokens=2, num_beams=2)
        stats = tm.model.vtc_stats
    assert stats.selected_frames == inputs.vtc_selection.selected_frames * 2
    assert stats.selected_times == inputs.vtc_selection.selected_times * 2
    assert stats.scenes == inputs.vtc_selection.scenes * 2


# -- errors --------------------------------------------------------------------------------------
def test_clear_errors(flash_mp4: str) -> None:
    tm = tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="smaller than one frame group"):
        _processor("qwen2_5_vl", "uniform-frames", tokens=3)[1]([flash_mp4], ["q"])
    with pytest.raises(ValueError, match="query-aware"):
        _processor("qwen2_5_vl", "query", tokens=64)[1]([flash_mp4], [""])
    with pytest.raises(ValueError, match="shorter than clip_length=40"):
        _processor("qwen2_5_vl", "keyclips(clip_length=40)", tokens=64)[1]([flash_mp4], ["q"])
    with pytest.raises(ValueError, match="pass model="):
        vtc.VideoProcessor(tm.processor, "keyframes", tokens=64)
    with pytest.raises(ValueError, match="one select-stage method"):
        vtc.VideoProcessor(tm.processor, "dtd", retain=0.5, model=tm.model)
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "uniform-frames", tokens=5), pytest.raises(ValueError, match="smaller than one frame group"):
        tm.model(**inputs)


def _bad_input(kind: str, folder) -> object:
    """A file (or value) that is not a usable video, of the given kind."""
    if kind == "none":
        return None
    path = folder / (f"{kind}.avi" if kind == "frameless-stream" else f"{kind}.mp4")
    if kind in ("no-video-stream", "frameless-stream"):
        import av

        with av.open(str(path), "w") as container:  # started but never fed: mp4 then drops the stream
            stream = container.add_stream("mpeg4" if kind == "frameless-stream" else "libx264", rate=4)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            container.start_encoding()
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not a video\n" * 50)
    elif kind == "png":
        from PIL import Image

        Image.fromarray(video(1)[0]).save(path, format="PNG")
    elif kind == "truncated":
        write_mp4(path, video(16))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "kind", ["none", "zero-bytes", "random-bytes", "text", "png", "no-video-stream", "frameless-stream", "truncated"]
)
def test_video_processor_refuses_what_load_video_refuses_with_the_same_error(kind: str, tmp_path) -> None:
    from vtc.video import load_video

    bad = _bad_input(kind, tmp_path)
    with pytest.raises((TypeError, ValueError)) as expected:
        load_video(bad)
    _, processor = _processor("qwen2_5_vl", "uniform-frames", tokens=64)
    with pytest.raises(type(expected.value)) as got:
        processor([bad], ["q"])
    assert type(got.value) is type(expected.value) and not isinstance(got.value, FileNotFoundError)
    if bad is not None:
        assert str(bad) in str(got.value)


def test_video_processor_notes_damaged_frames(tmp_path) -> None:
    from .builders import damage_mp4

    path = tmp_path / "damaged.mp4"
    write_mp4(path, video(16), fps=4)
    damage_mp4(path, first=5, count=4)
    _, processor = _processor("qwen2_5_vl", "uniform-frames", tokens=64)
    notes = processor([str(path)], ["q"]).vtc_selection.notes
    assert any("damaged frame(s)" in note and str(path) in note for note in notes)


@pytest.mark.parametrize("frames", [1, 2, 3])
@pytest.mark.parametrize("select", ["keyframes", "keyclips(relevance=novelty)", "query", "scenes", "uniform-frames", "fps"])
def test_every_selector_handles_videos_of_one_to_three_frames(select: str, frames: int, tmp_path) -> None:
    path = tmp_path / "short.mp4"
    write_mp4(path, video(frames), fps=4)
    tm, processor = _processor("qwen2_5_vl", select, retain=1.0)
    kept = processor([str(path)], ["What is it?"]).vtc_selection.selected_frames[0]
    assert kept and set(kept) <= set(range(frames))
    with vtc.compressed(tm.model, f"{select}:1.0"), torch.no_grad():
        tm.model(**tm.inputs([video(frames)], ["What is it?"]))
        padded = -(-frames // 2) * 2  # Qwen stacks frames in pairs; an odd count repeats the last frame
        assert set(tm.model.vtc_stats.selected_frames[0]) == set(range(padded))


NON_QWEN_SELECT = [f for f in SELECT_FAMILIES if not f.startswith("qwen")]


@pytest.mark.parametrize("family", NON_QWEN_SELECT)
def test_video_processor_selects_before_every_familys_processor(flash_mp4: str, family: str) -> None:
    tm, processor = _processor(family, "keyframes", retain=0.25)
    inputs = processor([flash_mp4, flash_mp4], ["What flashed?", "Which frame is white?"])
    record = inputs.vtc_selection
    per_frame, _ = processor.policy.measured_tokens(112, 112)
    for b in range(2):
        assert FLASH in record.selected_frames[b]
        assert record.visual_tokens[b] == per_frame * len(record.selected_frames[b]) <= record.budget_tokens[b]
    try:
        vtc.wrap(tm.model, "random:0.5")
        with torch.no_grad():
            tm.model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert tm.model.vtc_stats.selected_frames == record.selected_frames
        assert tm.model.vtc_stats.selected_times == record.selected_times
    finally:
        vtc.unwrap(tm.model)


@pytest.mark.parametrize("family", ["smolvlm", "video_llama_3"])
def test_video_processor_writes_the_selected_frames_real_times(flash_mp4: str, family: str) -> None:
    tm, processor = _processor(family, "keyframes", retain=0.25)
    inputs = processor([flash_mp4], ["What flashed?"])
    times = inputs.vtc_selection.selected_times[0]
    prompt = tm.processor.tokenizer.decode(inputs["input_ids"][0])
    stamps = [f"Time {t:.1f}s" for t in times] if family == "video_llama_3" else [f"Frame from 00:{int(t):02d}" for t in times]
    assert all(stamp in prompt for stamp in stamps), (stamps, prompt)
    assert times == sorted(times) and times != [i / 4 for i in range(len(times))]


def test_video_processor_on_fixed_resolution_families_refuses_scales_and_default_query_scoring(flash_mp4: str) -> None:
    tm = tiny("internvl")
    with pytest.raises(ValueError, match="no resolution to trade"):
        vtc.VideoProcessor(tm.processor, "keyclips", retain=0.25, scales=(1.0, 0.5))
    with pytest.raises(NotImplementedError, match="pass scorer="):
        vtc.VideoProcessor(tm.processor, "query", retain=0.25, model=tm.model)([flash_mp4], ["What flashed?"])


def test_fps_keeps_groups_at_real_times_inside_wrap() -> None:
    """At 4 fps with 2 frames per group a group lasts 0.5 s, so 1 group per second keeps every other
    group; deciding at the encoder on group indices (as if a group lasted 1 s) kept all of them."""
    from transformers.video_utils import VideoMetadata

    tm = tiny("qwen2_5_vl")
    metadata = [VideoMetadata(total_num_frames=16, fps=4.0, frames_indices=list(range(16)))]
    inputs = tm.inputs([video(16)], fps=4.0, video_metadata=metadata)
    with vtc.compressed(tm.model, "fps(fps=1.0)"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert stats.selected_times[0] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert stats.selected_frames[0] == [0, 1, 4, 5, 8, 9, 12, 13]
