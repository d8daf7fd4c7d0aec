"""DyCoke's decode stage: the new token's attention at layer L-1 chooses the visual tokens layers L.. attend to,
chosen anew only when that attention moves."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.methods.dycoke_kv import DyCokeKV
from vtc.tokens import VisualTokens

from .attention_oracle import top_rows, with_eager
from .builders import FAMILIES, cache_of, tiny, video


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


def test_decoding_masks_entries_but_keeps_the_cache_whole() -> None:
    tm = tiny("qwen2_vl")
    inputs = tm.inputs([video(8)])
    with vtc.compressed(tm.model, "dycoke-kv", retain=0.25), torch.no_grad():
        out = tm.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                return_dict_in_generate=True)
        steps = tm.model.vtc_stats.cache_steps
    prompt = inputs["input_ids"].shape[1]
    assert [layer.get_seq_length() for layer in cache_of(out).layers] == [prompt + 3] * 4
    assert len(steps) == 3 and all(step.layer == 3 for step in steps)


def test_refusals() -> None:
    model = tiny("qwen2_vl").model
    with pytest.raises(NotImplementedError, match="cannot follow layer-stage cuts"):
        vtc.wrap(model, "fastv@2:0.5>dycoke-kv:0.3")
    with pytest.raises(ValueError, match="must be in 1..3 for this model"):
        vtc.wrap(model, "dycoke-kv(layer=4):0.3")
    with pytest.raises(ValueError, match="ratio .* must be in"):
        DyCokeKV(ratio=1.0)
    assert not vtc.is_wrapped(model)
