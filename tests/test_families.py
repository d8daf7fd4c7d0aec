"""Family adapters read each layout exactly or refuse: rows offered to methods, rows kept like text, bad counts."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import vtc
from vtc import Pipeline, ScoreMethod
from vtc.patches import adapter_for

from .builders import STACKED_VIDEO_FAMILIES, tiny, video


def _captured(tm, inputs) -> dict:
    return {"input_ids": inputs["input_ids"], "pixel_values_videos": inputs["pixel_values_videos"]}


def _placeholders(tm, inputs) -> torch.Tensor:
    return (inputs["input_ids"] == tm.model.config.video_token_id) & inputs["attention_mask"].bool()


@pytest.mark.parametrize("family", STACKED_VIDEO_FAMILIES)
def test_layout_offers_exactly_the_grid_rows_frame_major(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs(tm.batch_clips())
    layouts = adapter_for(tm.model).layouts(_captured(tm, inputs), _placeholders(tm, inputs))
    frames = inputs["pixel_values_videos"].shape[1]
    for b, layout in enumerate(layouts):
        assert torch.equal(layout.rows, tm.visual_rows(inputs, b))
        videos = layout.rows.numel() // (frames * tm.frame_rows)
        assert layout.grid[0] == videos * frames and layout.grid[1] * layout.grid[2] == tm.frame_rows
        assert torch.equal(layout.frame, torch.arange(videos * frames).repeat_interleave(tm.frame_rows))
        assert layout.coords.unique(dim=0).shape[0] == layout.rows.numel(), "every token has its own (t, h, w)"


@pytest.mark.parametrize("family", STACKED_VIDEO_FAMILIES)
def test_layout_whose_row_count_disagrees_with_the_frame_grid_raises(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    placeholders = _placeholders(tm, inputs)
    placeholders[0, placeholders[0].nonzero()[-1]] = False
    with pytest.raises(ValueError, match="not a multiple"):
        adapter_for(tm.model).layouts(_captured(tm, inputs), placeholders)
    with pytest.raises(ValueError, match="pixel_values_videos"):
        adapter_for(tm.model).layouts({"input_ids": inputs["input_ids"]}, _placeholders(tm, inputs))


@pytest.mark.parametrize("family", STACKED_VIDEO_FAMILIES)
def test_rows_that_are_not_visual_tokens_survive_every_budget(family: str) -> None:
    """Newline / [CLS] rows sit on video placeholders but are never offered to methods, so never dropped."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    placeholders = _placeholders(tm, inputs)[0].nonzero().flatten()
    visual = tm.visual_rows(inputs, 0)
    fixed = placeholders[~torch.isin(placeholders, visual)]
    assert fixed.numel() == tm.video_suffix_rows + tm.frame_prefix_rows * inputs["pixel_values_videos"].shape[1]
    with vtc.compressed(tm.model, "random:0.1"):
        compressed = _language_model_embeds(tm, inputs)[0]
        assert tm.model.vtc_stats.visual_tokens == [visual.numel()]
    full = _language_model_embeds(tm, inputs)[0]
    assert compressed.shape[0] < full.shape[0]
    for row in fixed.tolist():
        assert (compressed == full[row]).all(dim=-1).any(), f"placeholder row {row} (not a visual token) was dropped"


def _language_model_embeds(tm, inputs) -> torch.Tensor:
    """The ``inputs_embeds`` the language model receives (after vtc's hook, which runs first)."""
    seen = {}

    def record(module, args, kwargs) -> None:
        seen["embeds"] = kwargs["inputs_embeds"]

    hook = tm.model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            tm.model(**inputs)
    finally:
        hook.remove()
    return seen["embeds"]


@dataclass
class _SaliencyProbe(ScoreMethod):
    """Test double: keeps the most salient tokens by the ViT saliency and remembers what it saw."""

    name = "saliency_probe"
    needs = frozenset({"vision_saliency"})
    seen: list = field(default_factory=list)

    def score(self, tokens):
        self.seen.append(tokens.vision_saliency)
        return tokens.vision_saliency


def test_video_llava_saliency_is_the_real_cls_attention_of_its_video_tower() -> None:
    tm = tiny("video_llava")
    inputs = tm.inputs(tm.batch_clips())
    probe = _SaliencyProbe()
    with vtc.compressed(tm.model, Pipeline(probe), retain=0.5), torch.no_grad():
        tm.model(**inputs)
    tower = tm.model.model.video_tower
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tower(inputs["pixel_values_videos"].flatten(0, 1), output_attentions=True)
    finally:
        tower.set_attn_implementation("sdpa")
    layer = tm.model.config.vision_config.num_hidden_layers - 2  # vision_feature_layer=-2
    expected = out.attentions[layer][:, :, 0, 1:].mean(dim=1).flatten()
    torch.testing.assert_close(torch.cat(probe.seen), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family, falls_back", [("video_llava", False), ("llava_onevision", True)])
def test_saliency_methods_fall_back_only_without_a_cls_and_say_so(family: str, falls_back: bool) -> None:
    tm = tiny(family)
    with vtc.compressed(tm.model, "holitom", retain=0.25), torch.no_grad():
        tm.model(**tm.inputs([video(8)]))
        notes = [n for stage in tm.model.vtc_stats.stages for n in stage.notes]
    assert any("saliency fallback" in n for n in notes) == falls_back, notes


@pytest.mark.parametrize("config_name, adapter_name, tokens_per_frame, extra_per_frame", [
    ("LlavaOnevisionConfig", "LlavaOnevisionAdapter", 196, 0),
    ("LlavaNextVideoConfig", "LlavaNextVideoAdapter", 144, 0),
    ("VideoLlavaConfig", "VideoLlavaAdapter", 256, 1),
])
def test_published_configs_give_the_published_tokens_per_frame(
    config_name: str, adapter_name: str, tokens_per_frame: int, extra_per_frame: int
) -> None:
    """The full-size default configs (7B checkpoints' vision settings) read as the papers' grids."""
    import transformers

    from vtc import patches

    holder = torch.nn.Module()
    holder.config = getattr(transformers, config_name)()
    adapter = getattr(patches, adapter_name)(holder)
    height, width = adapter.frame_grid()
    assert height * width == tokens_per_frame
    assert adapter.frame_prefix_rows == extra_per_frame
