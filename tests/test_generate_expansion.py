"""generate() with several rows per prompt (beam search, several returned sequences).

generate() encodes the caller's videos once and then repeats every prompt row ``num_beams`` (or
``num_return_sequences``) times; beam search then reorders the KV cache among the copies of a
sample. The oracles of tests/test_oracles.py must hold there too.
"""
from __future__ import annotations

import pytest
import torch

import vtc

from .builders import FAMILIES, tiny, unsupported_stages

STEPS = 3
EXPANSIONS = {
    "beams": dict(num_beams=3),
    "beams-returns": dict(num_beams=3, num_return_sequences=2),
    "sampling-returns": dict(do_sample=True, num_return_sequences=2),
}


def _copies(expansion: dict) -> int:
    """How many rows generate() makes of each prompt."""
    return max(expansion.get("num_beams", 1), expansion.get("num_return_sequences", 1))


def _generate(model, inputs, expansion: dict, **overrides):
    """Generation with every score recorded; a fixed seed so sampling draws the same numbers each call."""
    torch.manual_seed(0)
    with torch.no_grad():
        return model.generate(
            **{**inputs, **overrides}, max_new_tokens=STEPS, min_new_tokens=STEPS, output_logits=True,
            output_scores=True, return_dict_in_generate=True, **expansion,
        )


def _assert_identical(got, want) -> None:
    assert torch.equal(got.sequences, want.sequences)
    for step, (a, b) in enumerate(zip(got.logits, want.logits, strict=True)):
        assert torch.equal(a, b), f"logits of step {step} differ"
    for step, (a, b) in enumerate(zip(got.scores, want.scores, strict=True)):
        assert torch.equal(a, b), f"scores of step {step} differ"
    if "sequences_scores" in want:
        assert torch.equal(got.sequences_scores, want.sequences_scores)
        assert torch.equal(got.beam_indices, want.beam_indices)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", ["random:1.0", "dtd:1.0>fastv@2:1.0"])
@pytest.mark.parametrize("expansion", EXPANSIONS.values(), ids=EXPANSIONS.keys())
def test_retain_one_is_bit_identical_to_unwrapped(family: str, spec: str, expansion: dict) -> None:
    tm = tiny(family)
    inputs = tm.inputs(tm.batch_clips())
    reference = _generate(tm.model, inputs, expansion)
    with vtc.compressed(tm.model, spec):
        generated = _generate(tm.model, inputs, expansion)
        stats = tm.model.vtc_stats
    assert len(stats.visual_tokens) == 2 * _copies(expansion), "the language model should see every copy"
    assert stats.tokens_kept == stats.visual_tokens
    _assert_identical(generated, reference)


def _generate_positions(model, inputs) -> torch.Tensor:
    """The position ids generate() gives the unmasked prompt (M-RoPE ids on the Qwen line, else from the
    padding mask), so the masked reference keeps every token at its original position."""
    return model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", ["random:0.5", "dtd:0.5"])
def test_beam_search_pruning_equals_full_sequence_with_dropped_tokens_masked(family: str, spec: str) -> None:
    """Beam search on the pruned prompt equals beam search of the unwrapped model on the full prompt with
    the dropped tokens masked out of attention, positions preserved: same beams, same scores."""
    tm = tiny(family)
    inputs = tm.inputs(tm.batch_clips())
    expansion = EXPANSIONS["beams-returns"]
    copies = _copies(expansion)
    with vtc.compressed(tm.model, spec):
        pruned = _generate(tm.model, inputs, expansion)
        stats = tm.model.vtc_stats
    assert sum(stats.tokens_kept) < sum(stats.visual_tokens), "the oracle needs something dropped"
    mask = inputs["attention_mask"].clone()
    for b in range(mask.shape[0]):
        kept = stats.kept_indices[b * copies]
        assert all(stats.kept_indices[row] == kept for row in range(b * copies, (b + 1) * copies))
        rows = tm.visual_rows(inputs, b)
        dropped = torch.ones(rows.numel(), dtype=torch.bool)
        dropped[kept] = False
        mask[b, rows[dropped]] = 0
    masked = _generate(tm.model, inputs, expansion, attention_mask=mask, position_ids=_generate_positions(tm.model, inputs))
    assert torch.equal(pruned.sequences, masked.sequences)
    assert torch.equal(pruned.beam_indices, masked.beam_indices)
    torch.testing.assert_close(pruned.sequences_scores, masked.sequences_scores, rtol=1e-5, atol=1e-5)
    for got, want in zip(pruned.logits, masked.logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _hands_pixels(family: str) -> bool:
    """Whether the family's adapter gives methods raw pixels (what ``dtd(mode=pixel)`` reads)."""
    from vtc.patches import ADAPTERS
    from vtc.patches.base import FamilyAdapter

    (adapter,) = [a for a in ADAPTERS if family in a.model_types]
    return adapter.pixels is not FamilyAdapter.pixels


COPY_SPECS = ["fastv@2:0.5", "dtd:0.6>fastv@2:0.5", "dtd(mode=pixel):0.5", "holitom:0.3", "keyframes:0.5", "query:0.5"]


def _per_sample(stats: vtc.CompressionStats) -> dict:
    """What a forward kept for each row, stage by stage (times left out)."""
    return {
        "visual": stats.visual_tokens, "kept": stats.kept_indices,
        "layers": {layer: kept for layer, kept in stats.layer_kept_indices.items()},
        "stages": [(s.method, s.layer, s.tokens_before, s.tokens_after) for s in stats.stages],
        "frames": stats.selected_frames, "times": stats.selected_times, "scenes": stats.scenes,
    }


def _repeat_rows(per_sample: dict, copies: int) -> dict:
    """``per_sample`` with every per-row list holding each sample ``copies`` times in a row."""
    def rows(items: list) -> list:
        return [item for item in items for _ in range(copies)]

    return {
        **{key: rows(per_sample[key]) for key in ("visual", "kept", "frames", "times", "scenes")},
        "layers": {layer: rows(kept) for layer, kept in per_sample["layers"].items()},
        "stages": [(m, layer, rows(before), rows(after)) for m, layer, before, after in per_sample["stages"]],
    }


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", COPY_SPECS)
def test_every_copy_keeps_what_the_sample_alone_keeps(family: str, spec: str) -> None:
    """Layer, pixel, vision-saliency and select-stage methods under beam search: each copy of a sample keeps
    exactly the tokens (and frames) the sample keeps without copies, and each sample's beams equal the
    beams of that sample run alone (the batch oracle, with the KV cache reordered among beams)."""
    if unsupported_stages(family, spec):
        pytest.skip(f"{family} refuses stages {unsupported_stages(family, spec)} (checked in the conformance suite)")
    if "mode=pixel" in spec and not _hands_pixels(family):
        pytest.skip(f"the {family} adapter hands methods no raw pixels")
    tm = tiny(family)
    clips = tm.batch_clips()
    expansion = EXPANSIONS["beams-returns"]
    copies = _copies(expansion)
    with vtc.compressed(tm.model, spec):
        _generate(tm.model, tm.inputs(clips), {})
        alone = _per_sample(tm.model.vtc_stats)
        batched = _generate(tm.model, tm.inputs(clips), expansion)
        expanded = _per_sample(tm.model.vtc_stats)
        singles = [_generate(tm.model, tm.inputs([clip]), expansion) for clip in clips]
    assert any(sum(after) < sum(before) for _, _, before, after in expanded["stages"]), "the test needs a drop"
    assert expanded == _repeat_rows(alone, copies)
    returned = expansion["num_return_sequences"]
    for b, single in enumerate(singles):
        assert torch.equal(batched.sequences[b * returned : (b + 1) * returned, -STEPS:], single.sequences[:, -STEPS:])
        torch.testing.assert_close(
            batched.sequences_scores[b * returned : (b + 1) * returned], single.sequences_scores, rtol=1e-4, atol=1e-4
        )


def test_unwrap_removes_the_expansion_recorder() -> None:
    tm = tiny("qwen2_vl")
    with vtc.compressed(tm.model, "random:0.5"):
        assert "_expand_inputs_for_generation" in vars(tm.model)
    assert "_expand_inputs_for_generation" not in vars(tm.model)


def test_an_expansion_without_its_prefill_does_not_reach_the_next_forward() -> None:
    """A generate() that fails after copying the prompts leaves a record; a later plain forward is no copy."""
    tm = tiny("qwen2_vl")
    inputs = tm.inputs(tm.batch_clips())
    with vtc.compressed(tm.model, "random:0.5"), torch.no_grad():
        tm.model._expand_inputs_for_generation(expand_size=3, input_ids=inputs["input_ids"])
        tm.model(**inputs)
        assert len(tm.model.vtc_stats.visual_tokens) == 2
