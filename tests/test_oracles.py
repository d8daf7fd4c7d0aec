"""The correctness oracles: exact identity at retain 1.0, masked-attention equivalence, batch == per-sample."""
from __future__ import annotations

import inspect

import pytest
import torch

import vtc
from vtc.engine import cache_of

from .attention_oracle import top_rows, with_eager
from .builders import FAMILIES, cache_arg, ROPE_1D_FAMILIES, tiny, unsupported_stages, video

PRUNING_SPECS = ["random:0.3", "dtd:0.25", "dtd", "uniform:0.5"]


def greedy(model, inputs, steps: int = 5):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )


def _batch(family: str):
    tm = tiny(family)
    return tm, tm.inputs(tm.batch_clips())


RETAIN_ONE_SPECS = ["random:1.0", "dtd:1.0", "fastv@2:1.0", "dtd:1.0>fastv@2:1.0", "pyramiddrop:1.0", "dycoke-kv:1.0",
                    "framefusion:1.0", "visionzip:1.0", "visionzip:1.0>fastv@2:1.0", "dymu:1.0",
                    "fastv@2:1.0>dycoke-kv:1.0", "pyramiddrop:1.0>dycoke-kv(layer=1):1.0"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", RETAIN_ONE_SPECS)
def test_retain_one_is_bit_identical_to_unwrapped(family: str, spec: str) -> None:
    if unsupported_stages(family, spec):
        pytest.skip(f"{family} refuses stages {unsupported_stages(family, spec)} (checked in the conformance suite)")
    tm, inputs = _batch(family)
    checks = retain_one_checks(tm.model, inputs, spec)
    assert all(checks.values()), {name: ok for name, ok in checks.items() if not ok}


def retain_one_checks(model, inputs: dict, spec: str) -> dict:
    """What ``spec`` at retain 1.0 must leave exactly as it was: prefill logits, greedy tokens, every decode step's
    logits, every visual token kept, and the model after unwrap (each a bool).
    eval/device_oracles.py runs the same checks on an accelerator."""
    with torch.no_grad():
        reference_logits = model(**inputs).logits
    reference = greedy(model, inputs)
    with vtc.compressed(model, spec):
        with torch.no_grad():
            logits = model(**inputs).logits
        generated = greedy(model, inputs)
        all_kept = model.vtc_stats.tokens_kept == model.vtc_stats.visual_tokens
    with torch.no_grad():
        restored = torch.equal(model(**inputs).logits, reference_logits)
    return {
        "prefill_equal": torch.equal(logits, reference_logits),
        "tokens_equal": torch.equal(generated.sequences, reference.sequences),
        "decode_steps_equal": len(generated.logits) == len(reference.logits)
                              and all(torch.equal(got, want) for got, want in zip(generated.logits, reference.logits)),
        "all_kept": all_kept,
        "unwrap_restores": restored,
    }


def rope_positions(model, inputs) -> torch.Tensor:
    """The model's own position ids for the unmasked prompt: M-RoPE ids, or 0..L-1 for 1D RoPE."""
    get_rope_index = getattr(model.model, "get_rope_index", None)
    if get_rope_index is None:
        batch, length = inputs["input_ids"].shape
        return torch.arange(length, device=inputs["input_ids"].device).expand(batch, length)
    accepted = inspect.signature(get_rope_index).parameters
    kwargs = {k: v for k, v in inputs.items() if k in accepted and k != "input_ids"}
    positions, _ = get_rope_index(inputs["input_ids"], **kwargs)
    return positions


def dropped_masked(tm, inputs: dict, kept_indices: list[list[int]]) -> torch.Tensor:
    """The prompt's padding mask with each sample's visual tokens not in ``kept_indices`` masked out too."""
    mask = inputs["attention_mask"].clone()
    for b, kept in enumerate(kept_indices):
        rows = tm.visual_rows(inputs, b)
        dropped = torch.ones(rows.numel(), dtype=torch.bool)
        dropped[kept] = False
        mask[b, rows[dropped]] = 0
    return mask


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", PRUNING_SPECS)
def test_pruning_equals_full_sequence_with_dropped_tokens_masked(family: str, spec: str) -> None:
    tm, inputs = _batch(family)
    with vtc.compressed(tm.model, spec), torch.no_grad():
        pruned = tm.model(**inputs).logits[:, -1]
        stats = tm.model.vtc_stats
    assert sum(stats.tokens_kept) < sum(stats.visual_tokens), "the oracle needs something dropped"
    mask = dropped_masked(tm, inputs, stats.kept_indices)
    with torch.no_grad():
        masked = tm.model(**{**inputs, "attention_mask": mask, "position_ids": rope_positions(tm.model, inputs)}).logits[:, -1]
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ROPE_1D_FAMILIES)
def test_decoding_without_position_ids_continues_at_original_length(family: str) -> None:
    """A hand-written decode loop passes no position ids: the new token must sit at L + step, not at the
    shorter cache length, exactly as in the full sequence with the dropped tokens masked out."""
    tm, inputs = _batch(family)
    with vtc.compressed(tm.model, "random:0.3"), torch.no_grad():
        prefill = tm.model(**inputs, use_cache=True)
        stats = tm.model.vtc_stats
        pruned = _decode_steps(tm.model, inputs["attention_mask"], prefill)
    mask = inputs["attention_mask"].clone()
    for b, kept in enumerate(stats.kept_indices):
        dropped = torch.ones(len(tm.visual_rows(inputs, b)), dtype=torch.bool)
        dropped[kept] = False
        mask[b, tm.visual_rows(inputs, b)[dropped]] = 0
    with torch.no_grad():
        full = tm.model(**{**inputs, "attention_mask": mask}, position_ids=rope_positions(tm.model, inputs), use_cache=True)
        masked = _decode_steps(tm.model, mask, full)
    for got, want in zip(pruned, masked):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _decode_steps(model, mask: torch.Tensor, out, steps: int = 3) -> list[torch.Tensor]:
    """Greedy decoding by hand, passing only the new token, the cache and the padding mask."""
    logits, cache = [], cache_of(out)
    for _ in range(steps):
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(input_ids=token, attention_mask=mask, use_cache=True, **cache_arg(model, cache))
        logits.append(out.logits[:, -1])
    return logits


SELECTORS = [name for name in vtc.list_methods() if vtc.get_method(name).stage == "select"]
BATCH_SPECS = [f"{name}:0.3" for name in vtc.list_methods() if name != "uniform" and name not in SELECTORS] + [
    "uniform:0.5", "pool", "dtd:0.6>fastv@2:0.5", "holitom(inner_layer=2):0.5", "dycoke:0.5>dycoke-kv:0.3",
    "fastv@2:0.5>dycoke-kv:0.3", "pyramiddrop:0.5>dycoke-kv(layer=1):0.3",
] + [f"{name}:0.5" for name in SELECTORS]  # at 0.3 both test clips would keep one frame group


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", BATCH_SPECS)
def test_left_padded_batch_equals_samples_one_by_one(family: str, spec: str) -> None:
    if unsupported_stages(family, spec):
        pytest.skip(f"{family} refuses stages {unsupported_stages(family, spec)} (checked in the conformance suite)")
    tm = tiny(family)
    clips = tm.batch_clips()
    with vtc.compressed(tm.model, spec):
        batched = greedy(tm.model, tm.inputs(clips))
        counts = tm.model.vtc_stats.tokens_kept
        singles = [greedy(tm.model, tm.inputs([clip])) for clip in clips]
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
    out = with_eager(tm.model, lambda: tm.model(**inputs, output_attentions=True))
    assert kept == top_rows(out.attentions[layer - 1][0], tm.visual_rows(inputs, 0), len(kept))
