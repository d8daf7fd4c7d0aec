"""InternVL, SmolVLM and VideoLLaMA3: how their adapters read the visual rows, and what they refuse.

The generic suites (conformance, oracles) run these families too; this file covers what is
particular to them: frames fed as images, tiled images refused, and VideoLLaMA3's own token
compression composed with vtc's methods.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vtc
from vtc import Pipeline
from vtc.cli import main
from vtc.patches import adapter_for

from .builders import tiny, video, write_mp4
from .test_families import _SaliencyProbe
from .test_oracles import rope_positions


def _partly_static_clip() -> np.ndarray:
    """8 frames whose top half stops changing after frame 3, so VideoLLaMA3's own compression drops tokens."""
    clip = video(8)
    clip[4:, :56] = clip[3, :56]
    return clip


def _image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("family", ["internvl", "smolvlm"])
def test_each_image_token_run_is_one_frame_in_raster_order(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8), video(4, seed=1)])
    visual = (inputs["input_ids"] == tm.visual_token_id) & inputs["attention_mask"].bool()
    layouts = adapter_for(tm.model).layouts(dict(inputs), visual)
    for layout, frames in zip(layouts, (8, 4)):
        assert layout.grid == (frames, 4, 4)
        per_frame = layout.rows.view(frames, 16)
        assert bool((per_frame[:, 1:] == per_frame[:, :-1] + 1).all()), "one frame is one contiguous run"
        assert bool((per_frame[1:, 0] > per_frame[:-1, -1] + 1).all()), "text rows separate the frames"
        assert layout.coords[:, 0].tolist() == [t for t in range(frames) for _ in range(16)]
        assert layout.coords[:16, 1:].tolist() == [[h, w] for h in range(4) for w in range(4)]
        assert layout.time.tolist() == layout.coords[:, 0].float().tolist(), "no timestamps reach these models"


def test_internvl_refuses_a_tiled_image_instead_of_reading_tiles_as_frames() -> None:
    tm = tiny("internvl")
    wide = _image(112, 224)  # two tiles plus a thumbnail: one run of 3 x 16 image tokens
    inputs = tm.processor(
        text=["<|im_start|>user\n<IMG_CONTEXT>\n<video>\nWhat?<|im_end|>\n"], images=[wide], videos=[video(4)],
        return_tensors="pt",
    )
    with torch.no_grad():
        tm.model(**inputs)  # the model itself accepts the prompt
    with vtc.compressed(tm.model, "random:0.5"), torch.no_grad(), pytest.raises(ValueError, match="tiled image"):
        tm.model(**inputs)


def test_smolvlm_refuses_a_split_image_instead_of_reading_tiles_as_frames() -> None:
    tm = tiny("smolvlm")
    inputs = tm.processor(
        text=["<|im_start|>User: <image>What?<end_of_utterance>\nAssistant:"], images=[[_image(224, 224)]],
        do_image_splitting=True, size={"longest_edge": 224}, return_tensors="pt",
    )
    assert inputs["pixel_values"].shape[1] == 5, "2x2 tiles plus the global image"
    with vtc.compressed(tm.model, "random:0.5"), torch.no_grad(), pytest.raises(ValueError, match="split image"):
        tm.model(**inputs)


@pytest.mark.parametrize("family", ["internvl", "smolvlm"])
def test_a_run_that_is_not_one_frame_raises(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(2)])
    visual = inputs["input_ids"] == tm.visual_token_id
    visual[0, visual[0].nonzero()[-1]] = False  # the last frame now looks one token short
    with pytest.raises(ValueError, match="runs of \\[15, 16\\]"):
        adapter_for(tm.model).layouts(dict(inputs), visual)


def test_video_llama_3_rows_sit_at_the_grid_cells_its_compression_kept() -> None:
    tm = tiny("video_llama_3")
    inputs = tm.inputs([_partly_static_clip(), video(4, seed=1)])
    present = inputs["video_compression_mask"]
    assert 0 < int(present.sum()) < present.numel(), "the built-in compression must have dropped something"
    adapter = adapter_for(tm.model)
    visual = (inputs["input_ids"] == tm.visual_token_id) & inputs["attention_mask"].bool()
    layouts = adapter.layouts(dict(inputs), visual)
    with torch.no_grad():
        encoded = tm.model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], inputs["video_merge_sizes"]
        ).pooler_output
        prompt_embeds = tm.model(**inputs, output_hidden_states=True).hidden_states[0]
    for b, (layout, grid) in enumerate(zip(layouts, encoded)):
        frames, height, width = layout.grid
        cell = layout.coords[:, 0] * height * width + layout.coords[:, 1] * width + layout.coords[:, 2]
        torch.testing.assert_close(prompt_embeds[b, layout.rows], grid[cell], rtol=0, atol=0)
    assert layouts[0].grid == (8, 4, 4) and len(layouts[0].rows) == 8 * 16 - 4 * 8


def test_video_llama_3_stats_say_what_its_own_compression_removed() -> None:
    tm = tiny("video_llama_3")
    inputs = tm.inputs([_partly_static_clip()])
    with vtc.compressed(tm.model, "dtd:0.5"), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert stats.visual_tokens == [96]
    assert stats.tokens_kept == [48], "the budget counts from the tokens the built-in step left"
    assert any("dropped 32 of 128 tokens" in note for note in stats.notes)


@pytest.mark.parametrize("spec", ["dtd:0.5", "random:0.3", "divprune:0.25"])
def test_video_llama_3_pruning_on_top_of_its_compression_equals_masking(spec: str) -> None:
    tm = tiny("video_llama_3")
    inputs = tm.inputs([_partly_static_clip(), video(4, seed=1)])
    with vtc.compressed(tm.model, spec), torch.no_grad():
        pruned = tm.model(**inputs).logits[:, -1]
        stats = tm.model.vtc_stats
    mask = inputs["attention_mask"].clone()
    for b, kept in enumerate(stats.kept_indices):
        rows = ((inputs["input_ids"][b] == tm.visual_token_id) & mask[b].bool()).nonzero().flatten()
        dropped = torch.ones(rows.numel(), dtype=torch.bool)
        dropped[kept] = False
        mask[b, rows[dropped]] = 0
    with torch.no_grad():
        masked = tm.model(**{**inputs, "attention_mask": mask, "position_ids": rope_positions(tm.model, inputs)})
    torch.testing.assert_close(pruned, masked.logits[:, -1], rtol=1e-5, atol=1e-5)


def test_video_llama_3_whole_frame_methods_name_the_switch_when_frames_have_holes() -> None:
    tm = tiny("video_llama_3")
    clip = _partly_static_clip()
    with vtc.compressed(tm.model, "fastvid:0.3"), torch.no_grad():
        with pytest.raises(ValueError, match="use_token_compression"):
            tm.model(**tm.inputs([clip]))
        tm.model(**tm.inputs([clip], use_token_compression=False))
        stats = tm.model.vtc_stats
    assert stats.visual_tokens == [128] and not stats.notes
    assert 0 < stats.tokens_kept[0] <= 39


def test_video_llama_3_layout_refuses_a_mask_that_disagrees_with_the_prompt() -> None:
    tm = tiny("video_llama_3")
    inputs = dict(tm.inputs([_partly_static_clip()]))
    visual = inputs["input_ids"] == tm.visual_token_id
    inputs["video_compression_mask"] = torch.ones_like(inputs["video_compression_mask"])
    with pytest.raises(ValueError, match="96 video tokens but its videos keep 128"):
        adapter_for(tm.model).layouts(inputs, visual)


def test_video_llama_3_pixels_are_each_kept_tokens_own_patch() -> None:
    """dtd's pixel mode reads VideoLLaMA3's raw patches: token (t, h, w) carries frame t's 28x28 block (h, w)."""
    tm = tiny("video_llama_3")
    clip = _partly_static_clip()  # 112 px frames: the processor does not resize them
    inputs = tm.inputs([clip])
    adapter = adapter_for(tm.model)
    layout = adapter.layouts(dict(inputs), inputs["input_ids"] == tm.visual_token_id)[0]
    pixels = adapter.pixels(dict(inputs), [96])[0]
    assert pixels.shape == (96, 1, 3, 28 * 28)
    blocks = torch.stack([
        torch.from_numpy(clip[t, h * 28 : (h + 1) * 28, w * 28 : (w + 1) * 28]).float().div(255).permute(2, 0, 1)
        for t, h, w in layout.coords.tolist()
    ])
    torch.testing.assert_close(pixels[:, 0].mean(-1), blocks.flatten(2).mean(-1), rtol=0, atol=1e-5)
    with vtc.compressed(tm.model, "dtd(mode=pixel):0.5"), torch.no_grad():
        tm.model(**inputs)
        assert tm.model.vtc_stats.tokens_kept == [48]


@pytest.mark.parametrize("family", ["internvl", "smolvlm", "video_llama_3"])
def test_vtc_run_compresses_a_saved_checkpoint_of_the_family(family: str, tmp_path) -> None:
    """Save/load round trip through the Auto classes, the chat template and the CLI's input building."""
    tm = tiny(family)
    tm.model.save_pretrained(tmp_path / "ckpt")
    tm.processor.save_pretrained(tmp_path / "ckpt")
    write_mp4(tmp_path / "clip.mp4", video(16), fps=4)
    code = main(["run", str(tmp_path / "clip.mp4"), "What moves?", "--model", str(tmp_path / "ckpt"), "--method", "dtd",
                 "--retain", "0.25", "--num-frames", "8", "--max-new-tokens", "2", "--json", str(tmp_path / "run.json")])
    assert code == 0
    stats = json.loads((tmp_path / "run.json").read_text())["stats"]
    assert stats["visual_tokens"] == [8 * 16] and stats["tokens_kept"] == [32]


def test_internvl_saliency_is_its_vits_cls_attention_summed_over_each_tokens_patches() -> None:
    """Recorded beside sdpa, the saliency methods see eager attention's [CLS] row, pooled per visual token."""
    tm = tiny("internvl")
    inputs = tm.inputs([video(4), video(2, seed=1)])
    probe = _SaliencyProbe()
    with vtc.compressed(tm.model, Pipeline(probe), retain=0.5), torch.no_grad():
        tm.model(**inputs)
    vision = tm.model.model.vision_tower
    vision.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = vision(pixel_values=inputs["pixel_values"], output_attentions=True).attentions[-1]
    finally:
        vision.set_attn_implementation("sdpa")
    patches = eager[:, :, 0, 1:].mean(dim=1).float()  # [frames, 8 x 8 patches] -> 4 x 4 tokens of 2 x 2 patches
    expected = patches.view(-1, 4, 2, 4, 2).sum(dim=(2, 4)).flatten()
    assert float(expected.std()) > 0.01, "the tiny ViT's [CLS] attention must not be uniform for this to test anything"
    torch.testing.assert_close(torch.cat(probe.seen), expected, rtol=1e-5, atol=1e-6)

    with vtc.compressed(tm.model, "fastvid:0.25"), torch.no_grad():
        tm.model(**inputs)
        notes = [n for stage in tm.model.vtc_stats.stages for n in stage.notes]
    assert not any("saliency fallback" in n for n in notes), notes


@pytest.mark.parametrize("family", ["smolvlm", "video_llama_3"])
def test_families_without_cls_name_the_saliency_fallback(family: str) -> None:
    tm = tiny(family)
    with vtc.compressed(tm.model, "fastvid:0.25"), torch.no_grad():
        tm.model(**tm.inputs([video(4)]))
        notes = tm.model.vtc_stats.stages[0].notes
    assert any("saliency fallback" in note for note in notes), notes


def test_published_configs_give_the_published_tokens_per_frame() -> None:
    """InternVL3's default config reads as 16x16 = 256 tokens per frame; SmolVLM2 (512 px, 16 px patches,
    scale factor 4) as 8x8 = 64."""
    from transformers import InternVLConfig, SmolVLMConfig

    from vtc.patches import InternVLAdapter, SmolVLMAdapter

    internvl, smolvlm = torch.nn.Module(), torch.nn.Module()
    internvl.config = InternVLConfig()
    smolvlm.config = SmolVLMConfig(vision_config=dict(image_size=512, patch_size=16), scale_factor=4)
    assert InternVLAdapter(internvl).frame_grid() == (16, 16)
    assert SmolVLMAdapter(smolvlm).frame_grid() == (8, 8)
