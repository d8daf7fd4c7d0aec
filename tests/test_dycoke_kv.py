"""DyCoke's decode stage: the new token's attention at layer L-1 chooses the visual tokens layers L.. attend to,
chosen anew only when that attention moves."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pytest
import torch
from transformers.cache_utils import DynamicLayer

import vtc
from vtc.engine import cache_of
from vtc.engine.compact_cache import CompactLayer
from vtc.method import top_k_stable
from vtc.methods.dycoke_kv import DyCokeKV
from vtc.patches import adapter_for
from vtc.tokens import CacheChoice, VisualTokens

from .attention_oracle import top_rows, with_eager
from .builders import FAMILIES, tiny, video
from .test_oracles import greedy


@pytest.mark.parametrize("family", FAMILIES)
def test_first_decode_step_keeps_what_eager_attention_of_the_new_token_ranks_highest(family: str) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    layer = 2
    with vtc.compressed(tm.model, f"dycoke-kv(layer={layer})", retain=0.25), torch.no_grad():
        tm.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        first = tm.model.vtc_stats.cache_steps[0]
    out = with_eager(tm.model, lambda: tm.model.generate(
        **inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, output_attentions=True,
        return_dict_in_generate=True,
    ))
    rows = tm.visual_rows(inputs, 0)
    assert first.reselected == [True] and first.kept == [vtc.Budget(retain=0.25).count(rows.numel())]
    assert first.chosen[0] == top_rows(out.attentions[1][layer - 1][0], rows, first.kept[0])  # decode step 1, layer L-1


def test_a_choice_stands_while_attention_is_similar_and_is_made_anew_when_it_moves() -> None:
    method = DyCokeKV(ratio=0.5)
    tokens = VisualTokens.from_grid(torch.zeros(8, 4), (2, 2, 2))
    first = method.choose(_with_attention(tokens, [8, 7, 6, 5, 4, 3, 2, 1]), vtc.Budget(), None)
    assert first.reselected and first.keep.tolist() == [0, 1, 2, 3]
    similar = method.choose(_with_attention(tokens, [8, 7, 6, 5, 4, 3, 2, 1.5]), vtc.Budget(), first)
    assert not similar.reselected and similar.keep is first.keep
    moved = method.choose(_with_attention(tokens, [1, 2, 3, 4, 5, 6, 7, 8]), vtc.Budget(), similar)
    assert moved.reselected and moved.keep.tolist() == [4, 5, 6, 7]


def _with_attention(tokens: VisualTokens, values: list[float]) -> VisualTokens:
    tokens.attn = torch.tensor(values)
    return tokens


@dataclass
class _Alternating(DyCokeKV):
    """Chooses anew at every step, alternating between the most- and the least-attended tokens, so consecutive
    steps hide different cache entries (a test device for the re-gathering path)."""

    def choose(self, tokens: VisualTokens, budget: vtc.Budget, previous: CacheChoice | None) -> CacheChoice:
        attention, count = tokens.attn.float(), self.count(len(tokens), budget)
        top = torch.sort(top_k_stable(attention, count)).values
        if previous is not None and torch.equal(previous.keep, torch.sort(top_k_stable(previous.attention, count)).values):
            top = torch.sort(top_k_stable(-attention, count)).values
        return CacheChoice(keep=top, attention=attention, reselected=True)


@contextmanager
def _masked_reference(tm, inputs: dict, first: int, chosen_per_step: list[list[list[int]]]) -> Iterator[None]:
    """The reference: on the unwrapped model, decode step t masks each row's visual rows not in
    ``chosen_per_step[t][row]`` out of layers ``first``.. (the whole cache stays; nothing is gathered)."""
    layers = adapter_for(tm.model).decoder_layers()
    step = [-1]
    rows = [tm.visual_rows(inputs, b) for b in range(inputs["input_ids"].shape[0])]

    def hook(idx: int):
        def run(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[1] != 1:
                return None  # the prefill
            step[0] += idx == first
            mask = kwargs["attention_mask"]
            assert mask is not None and mask.ndim == 4, "the reference needs a 4D mask (a padded batch, or eager)"
            mask = mask.clone()
            for b, chosen in enumerate(chosen_per_step[step[0]]):
                hidden_rows = torch.ones(rows[b].numel(), dtype=torch.bool)
                hidden_rows[chosen] = False
                blocked = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
                mask[b, :, :, rows[b][hidden_rows]] = blocked
            return args, {**kwargs, "attention_mask": mask}

        return run

    handles = [layers[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in range(first, len(layers))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _chosen_per_step(steps) -> list[list[list[int]]]:
    """Each decode step's chosen visual tokens per row (steps that carry a choice over repeat the last one)."""
    out, current = [], None
    for step in steps:
        current = [new if again else old for new, again, old in zip(step.chosen, step.reselected, current or step.chosen)]
        out.append(current)
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", [_Alternating(ratio=0.7), DyCokeKV(ratio=0.5)], ids=["changing", "dycoke-kv"])
def test_compact_attention_equals_the_whole_cache_with_unchosen_entries_masked(family: str, method: DyCokeKV) -> None:
    tm = tiny(family)
    inputs = tm.inputs(tm.batch_clips())
    with vtc.compressed(tm.model, method):
        got = greedy(tm.model, inputs)
        steps = tm.model.vtc_stats.cache_steps
    if isinstance(method, _Alternating):
        assert all(step.reselected == [True, True] for step in steps)
        assert steps[0].chosen != steps[1].chosen, "the selection must change between steps"
    with _masked_reference(tm, inputs, method.layer, _chosen_per_step(steps)):
        want = greedy(tm.model, inputs)
    assert torch.equal(got.sequences, want.sequences)
    assert len(got.logits) == len(steps) + 1
    for step, (a, b) in enumerate(zip(got.logits, want.logits)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {step}")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_one_sample_without_a_mask_equals_the_masked_reference(family: str) -> None:
    """Alone, sdpa gets no mask while decoding (plain causal); the compact copy then needs none either. The
    reference runs eager attention, whose 4D mask the reference hooks edit."""
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    method = _Alternating(ratio=0.7)
    with vtc.compressed(tm.model, method):
        got = greedy(tm.model, inputs)
        steps = tm.model.vtc_stats.cache_steps
    with _masked_reference(tm, inputs, method.layer, _chosen_per_step(steps)):
        want = with_eager(tm.model, lambda: greedy(tm.model, inputs))
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_beam_search_rows_keep_their_beams_selection() -> None:
    """Beam search reorders the cache between steps: each compact row must follow its beam (and its selection)."""
    tm = tiny("qwen2_vl")
    inputs = tm.inputs(tm.batch_clips())
    method = _Alternating(ratio=0.7)
    beams = dict(max_new_tokens=5, min_new_tokens=5, num_beams=2, num_return_sequences=2, do_sample=False,
                 output_scores=True, return_dict_in_generate=True)
    with vtc.compressed(tm.model, method), torch.no_grad():
        got = tm.model.generate(**inputs, **beams)
        steps = tm.model.vtc_stats.cache_steps
    assert all(len(step.chosen) == 4 for step in steps)
    beam_rows = {k: v.repeat_interleave(2, dim=0) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    with _masked_reference(tm, beam_rows | {"pixel_values_videos": inputs["pixel_values_videos"]}, method.layer,
                           _chosen_per_step(steps)), torch.no_grad():
        want = tm.model.generate(**inputs, **beams)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _present(stats, row: int, layer: int) -> set[int]:
    """Original indices of the row's visual tokens a layer's cache holds (after the cuts up to it)."""
    cuts = [k for k in sorted(stats.layer_kept_indices) if k <= layer]
    return set(stats.layer_kept_indices[cuts[-1]][row] if cuts else stats.kept_indices[row])


@pytest.mark.parametrize("spec", [
    "dycoke-kv:0.3", "dycoke:0.5>dycoke-kv:0.3", "fastv@2:0.5>dycoke-kv:0.3", "fastv@3:0.5>dycoke-kv:0.3",
    "pyramiddrop:0.5>dycoke-kv(layer=1):0.3", "framefusion:0.5>dycoke-kv(layer=2):0.3",
])
def test_each_layer_caches_text_the_chosen_tokens_it_holds_and_decoded_tokens(spec: str) -> None:
    """After each step, layers from L hold exactly what the stats report: the row's text, the chosen visual tokens
    that survived the layer cuts up to that layer, and every decoded token; the layers below hold everything."""
    tm = tiny("qwen2_vl")
    inputs = tm.inputs(tm.batch_clips())
    with vtc.compressed(tm.model, spec):
        out = greedy(tm.model, inputs)
        stats = tm.model.vtc_stats
        layers = cache_of(out).layers
        first = stats.cache_steps[0].layer
        chosen_per_step = _chosen_per_step(stats.cache_steps)
        for t, (step, chosen) in enumerate(zip(stats.cache_steps, chosen_per_step)):
            assert sorted(step.kv_lengths) == list(range(first, len(layers)))
            for row, positions in enumerate(chosen):
                entered = stats.kept_indices[row]
                sources = {entered[p] for p in positions}
                assert len(positions) == step.kept[row] and sources <= _present(stats, row, first - 1)
                text = int(inputs["attention_mask"][row].sum()) - stats.visual_tokens[row]
                for layer, lengths in step.kv_lengths.items():
                    assert lengths[row] == text + len(sources & _present(stats, row, layer)) + t + 1
        last, whole = stats.cache_steps[-1].kv_lengths, {}
        for idx, layer in enumerate(layers):
            if idx < first:
                assert type(layer) is DynamicLayer
            else:
                assert isinstance(layer, CompactLayer) and layer.lengths() == last[idx]
                assert layer.get_seq_length() == max(last[idx]) and layer.decoded == len(stats.cache_steps)
                whole[idx] = layer.prompt_keys.shape[-2] + layer.decoded
    assert all(type(layer) is DynamicLayer for layer in layers), "unwrap turns compact layers back into whole ones"
    assert {idx: layers[idx].get_seq_length() for idx in whole} == whole


def test_refusals() -> None:
    tm = tiny("qwen2_vl")
    model = tm.model
    with pytest.raises(ValueError, match="must be in 1..3 for this model"):
        vtc.wrap(model, "dycoke-kv(layer=4):0.3")
    with pytest.raises(ValueError, match="ratio .* must be in"):
        DyCokeKV(ratio=1.0)
    assert not vtc.is_wrapped(model)
    with vtc.compressed(model, "dycoke-kv:0.3"):
        out = greedy(model, tm.inputs([video(8)]), steps=2)
        with pytest.raises(NotImplementedError, match="cannot be cropped"):
            cache_of(out).layers[3].crop(-1)
