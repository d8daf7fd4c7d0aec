"""FastVID's ATS / HoliTom's saliency read from the Qwen vision tower's last block.

Oracle: the rotated queries and keys the model's own last vision block computes (recorded from its
rotary function), put into the order of the model's pooled output by matching the merger's input
rows to that output, then :func:`vtc.saliency.ats_saliency` (itself checked against the official
vectors in test_parity_fastvid). This checks the hook's q/k extraction and Qwen2.5-VL's window
un-permutation independently of how the adapter does them.
"""
from __future__ import annotations

import importlib

import pytest
import torch

import vtc
from vtc.patches import adapter_for
from vtc.methods.fastvid import FastVID
from vtc.saliency import ats_saliency
from vtc.tokens import VisualTokens

from .builders import tiny, video

MODELING = {
    "qwen2_vl": "transformers.models.qwen2_vl.modeling_qwen2_vl",
    "qwen2_5_vl": "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
    "qwen3_vl": "transformers.models.qwen3_vl.modeling_qwen3_vl",
}
# The pseudo-[CLS] ATS reading of the last block applies to the Qwen towers (no [CLS]); Video-LLaVA's real
# [CLS] attention is tested in test_families.py.
QWEN_FAMILIES = tuple(MODELING)


def _oracle(family: str, inputs: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-video saliency [T*M] in LLM row order, and the LLM-input video features."""
    model = tiny(family).model
    module = importlib.import_module(MODELING[family])
    rotated: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = module.apply_rotary_pos_emb_vision

    def recording(q, k, cos, sin):
        out = original(q, k, cos, sin)
        rotated.append(out)
        return out

    monkeypatch.setattr(module, "apply_rotary_pos_emb_vision", recording)
    merger_out: list[torch.Tensor] = []
    handle = model.model.visual.merger.register_forward_hook(lambda m, a, o: merger_out.append(o))
    try:
        with torch.no_grad():
            pooled = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
    finally:
        handle.remove()
    pooled = torch.cat(list(pooled)) if isinstance(pooled, (tuple, list)) else pooled
    order = torch.cdist(pooled.float(), merger_out[0].float()).argmin(dim=1)  # output row i = merger row order[i]
    assert torch.equal(merger_out[0][order], pooled)
    q, k = rotated[-1]
    unit = model.config.vision_config.spatial_merge_size ** 2
    q, k = (t.reshape(-1, unit, *t.shape[1:])[order].reshape(t.shape) for t in (q, k))
    grids = inputs["video_grid_thw"]
    sizes = grids.prod(dim=1).tolist()
    saliency = [ats_saliency(qv, kv, tuple(g), 2).flatten()
                for qv, kv, g in zip(q.split(sizes), k.split(sizes), grids.tolist())]
    return saliency, pooled


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_adapter_reports_the_last_blocks_ats_saliency(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8, seed=1), video(8, seed=2)])
    expected, _ = _oracle(family, inputs, monkeypatch)
    monkeypatch.undo()
    reported: list[torch.Tensor] = []
    removers = adapter_for(tm.model).record_vision_saliency(reported.extend)
    try:
        with torch.no_grad():
            tm.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    finally:
        for remove in removers:
            remove()
    assert len(reported) == 2
    for got, want in zip(reported, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_wrapped_fastvid_selects_with_vit_saliency(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8, seed=3)])
    saliency, features = _oracle(family, inputs, monkeypatch)
    monkeypatch.undo()
    grid = tuple(int(v) for v in inputs["video_grid_thw"][0])
    merge = tm.model.config.vision_config.spatial_merge_size
    tokens = VisualTokens.from_grid(features, (grid[0], grid[1] // merge, grid[2] // merge))
    tokens.vision_saliency = saliency[0]
    method = FastVID()
    expected = method.compress(tokens, method.resolve_budget(vtc.Budget(retain=0.25)))
    with vtc.compressed(tm.model, method, retain=0.25), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert stats.kept_indices[0] == expected.keep.tolist()
    notes = [n for rec in stats.stages for n in rec.notes]
    assert not any("saliency fallback" in n for n in notes), notes


def test_an_image_in_the_same_prompt_does_not_mix_into_the_video_saliency() -> None:
    """The tower also encodes images; only video encodings are recorded, else the saliency count
    would disagree with the video rows and the engine would raise."""
    tm = tiny("qwen2_5_vl")
    clip = video(8, seed=4)
    text = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>"
            "What happens?<|im_end|>\n<|im_start|>assistant\n")
    inputs = tm.processor(text=[text], images=[clip[0]], videos=[clip], return_tensors="pt", do_sample_frames=False)
    with vtc.compressed(tm.model, "fastvid", retain=0.25), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert stats.visual_tokens[0] == int((inputs["input_ids"] == tm.model.config.video_token_id).sum())
    assert not any("saliency fallback" in n for rec in stats.stages for n in rec.notes)


@pytest.mark.parametrize("spec", ["uniform-frames:0.5>fastvid:0.5", "scenes:0.5>holitom:0.5"])
def test_saliency_reaches_methods_after_a_selector_encoded_only_chosen_frames(spec: str) -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8, seed=5)])
    with vtc.compressed(tm.model, spec), torch.no_grad():
        tm.model(**inputs)
        stats = tm.model.vtc_stats
    assert len(stats.selected_frames[0]) < 8
    assert not any("saliency fallback" in n for rec in stats.stages for n in rec.notes)
