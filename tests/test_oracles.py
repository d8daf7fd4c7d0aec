"""The correctness oracles: exact identity at retain 1.0, masked-attention equivalence, batch == per-sample."""
from __future__ import annotations

import inspect

import pytest
import torch

import vtc

from .builders import FAMILIES, tiny, video

PRUNING_SPECS = ["random:0.3", "dtd:0.25", "dtd", "uniform:0.5"]


def _generate(model, inputs, steps: int = 5):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )


def _batch(family: str):
    tm = tiny(family)
    return tm, tm.inputs([video(8), video(4, seed=1)])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", ["random:1.0", "dtd:1.0", "fastv@2:1.0", "dtd:1.0>fastv@2:1.0"])
def test_retain_one_is_bit_identical_to_unwrapped(family: str, spec: str) -> None:
    tm, inputs = _batch(family)
    with torch.no_grad():
        reference_logits = tm.model(**inputs).logits
    reference = _generate(tm.model, inputs)
    with vtc.compressed(tm.model, spec):
        with torch.no_grad():
            logits = tm.model(**inputs).logits
        generated = _generate(tm.model, inputs)
        assert tm.model.vtc_stats.tokens_kept == tm.model.vtc_stats.visual_tokens
    assert torch.equal(logits, reference_logits)
    assert torch.equal(generated.sequences, reference.sequences)
    for step, (got, want) in enumerate(zip(generated.logits, reference.logits)):
        assert torch.equal(got, want), f"decode step {step} differs"
    with torch.no_grad():
        assert torch.equal(tm.model(**inputs).logits, reference_logits), "unwrap did not restore the model"


def _rope_positions(model, inputs) -> torch.Tensor:
    """The model's own (M-)RoPE ids for the unmasked prompt (1D families number every row, as without a cache)."""
    get_rope_index = getattr(model.model, "get_rope_index", None)
    if get_rope_index is None:
        batch, length = inputs["input_ids"].shape
        return torch.arange(length).expand(batch, -1)
    accepted = inspect.signature(get_rope_index).parameters
    kwargs = {k: v for k, v in inputs.items() if k in accepted and k != "input_ids"}
    positions, _ = get_rope_index(inputs["input_ids"], **kwargs)
    return positions


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", PRUNING_SPECS)
def test_pruning_equals_full_sequence_with_dropped_tokens_masked(family: str, spec: str) -> None:
    tm, inputs = _batch(family)
    with vtc.compressed(tm.model, spec), torch.no_grad():
        pruned = tm.model(**inputs).logits[:, -1]
        stats = tm.model.vtc_stats
    assert sum(stats.tokens_kept) < sum(stats.visual_tokens), "the oracle needs something dropped"
    mask = inputs["attention_mask"].clone()
    video_id = tm.visual_token_id
    for b, kept in enumerate(stats.kept_indices):
        rows = ((inputs["input_ids"][b] == video_id) & mask[b].bool()).nonzero().flatten()
        dropped = torch.ones(rows.numel(), dtype=torch.bool)
        dropped[kept] = False
        mask[b, rows[dropped]] = 0
    with torch.no_grad():
        masked = tm.model(**{**inputs, "attention_mask": mask, "position_ids": _rope_positions(tm.model, inputs)}).logits[:, -1]
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)


BATCH_SPECS = [f"{name}:0.3" for name in vtc.list_methods() if name != "uniform"] + [
    "uniform:0.5", "pool", "dtd:0.6>fastv@2:0.5",
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", BATCH_SPECS)
def test_left_padded_batch_equals_samples_one_by_one(family: str, spec: str) -> None:
    tm = tiny(family)
    clips = [video(8), video(4, seed=1)]
    with vtc.compressed(tm.model, spec):
        batched = _generate(tm.model, tm.inputs(clips))
        counts = tm.model.vtc_stats.tokens_kept
        singles = [_generate(tm.model, tm.inputs([clip])) for clip in clips]
    assert counts[0] != counts[1], "samples should keep different numbers of tokens"
    steps = len(batched.logits)
    for b, single in enumerate(singles):
        assert torch.equal(batched.sequences[b, -steps:], single.sequences[0, -steps:])
        for got, want in zip(batched.logits, single.logits):
            torch.testing.assert_close(got[b], want[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_fastv_keeps_the_tokens_eager_attention_ranks_highest(family: str) -> None:
    """The recorded last-token attention (computed beside sdpa) equals eager attention's."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    layer = 2
    with vtc.compressed(tm.model, f"fastv@{layer}:0.25"), torch.no_grad():
        tm.model(**inputs)
        kept = tm.model.vtc_stats.layer_kept_indices[layer][0]
    tm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tm.model(**inputs, output_attentions=True)
    finally:
        tm.model.set_attn_implementation("sdpa")
    rows = (inputs["input_ids"][0] == tm.visual_token_id).nonzero().flatten()
    scores = out.attentions[layer - 1][0, :, -1, :].mean(dim=0)[rows]
    expected = torch.sort(torch.sort(scores, descending=True, stable=True).indices[: len(kept)]).values
    assert kept == expected.tolist()
