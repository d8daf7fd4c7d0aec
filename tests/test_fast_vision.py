"""The training speed-ups of the reference model's vision tower compute the stock function."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vtc.synth.fast_vision import speed_up_vision
from vtc.synth.model import build_model, build_processor, build_tokenizer


def _inputs(sizes: list[int]) -> dict:
    processor = build_processor(build_tokenizer())
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, size=(4, s, s, 3), dtype=np.uint8) for s in sizes]
    return processor.video_processor(videos=clips, do_sample_frames=False, return_tensors="pt")


@pytest.mark.parametrize("sizes", [[112, 112], [112, 56]], ids=["equal-chunks", "unequal-chunks"])
def test_patched_vision_tower_matches_stock_values_and_gradients(sizes: list[int]) -> None:
    inputs = _inputs(sizes)
    outputs, grads = [], []
    for patched in (False, True):
        model = build_model(build_tokenizer(), seed=0)
        if patched:
            speed_up_vision(model)
            assert all("forward" in vars(block.attn) for block in model.model.visual.blocks)
        out = model.model.visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.model.visual.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)
