"""HoliTom's inner-LLM stage: FastV's selection at layer K, each dropped token folded into its most similar
kept token by the official running average, composed with the outer stage in one method."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vtc
from vtc.engine import cache_of
from vtc.methods.holitom_inner import fold_into_most_similar

from .builders import tiny, video


def _official_loop(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The official update, literally: for each dropped row in increasing order, kept = (kept + dropped) / 2."""
    out = x.clone()
    others = [i for i in range(x.shape[0]) if i not in set(keep.tolist())]
    similarity = F.normalize(x[others], dim=-1) @ F.normalize(x[keep], dim=-1).T
    for row, best in zip(others, similarity.argmax(dim=-1).tolist()):
        out[keep[best]] = (out[keep[best]] + x[row]) / 2
    return out[keep]


@pytest.mark.parametrize("seed", range(4))
def test_closed_form_equals_the_official_sequential_averaging(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 8, generator=generator, dtype=torch.float64)
    keep = torch.sort(torch.randperm(40, generator=generator)[:7]).values
    merged, target = fold_into_most_similar(x, keep)
    torch.testing.assert_close(merged, _official_loop(x, keep), rtol=1e-12, atol=1e-12)
    assert target[keep].tolist() == list(range(7))


def test_inner_stage_selects_as_fastv_at_the_same_layer_and_merges_into_the_kept_rows() -> None:
    tm = tiny("qwen2_5_vl")
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "holitom(inner_layer=2):0.5"), torch.no_grad():
        out = tm.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                return_dict_in_generate=True)
        stats = tm.model.vtc_stats
    entering = len(stats.kept_indices[0])
    inner = stats.layer_kept_indices[2][0]
    assert len(inner) == round(entering * 0.5)
    with vtc.compressed(tm.model, f"holitom:0.5>fastv@2:{len(inner)}"), torch.no_grad():
        tm.model(**inputs)
        assert tm.model.vtc_stats.layer_kept_indices[2][0] == inner
    lengths = [layer.get_seq_length() for layer in cache_of(out).layers]
    full = inputs["input_ids"].shape[1] - (stats.visual_tokens[0] - entering) + 2
    assert lengths == [full, full] + [full - (entering - len(inner))] * (len(lengths) - 2)


def test_inner_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="runs only with inner_layer"):
        vtc.get_method("holitom")(inner_ratio=0.5)
    with pytest.raises(ValueError, match="inner_layer must be an int >= 1"):
        vtc.get_method("holitom")(inner_layer=0)
    with pytest.raises(ValueError, match="must be in 1..3 for this model"):
        vtc.wrap(tiny("qwen2_vl").model, "holitom(inner_layer=4):0.5")
