"""Every registered method x every supported family x retain 0.1/0.25/0.5: generate works, the KV
cache holds exactly the kept tokens, and the stats agree with what was dropped.

New methods join this suite by registering; they do not write new tests here.
"""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc import Budget, ScoreMethod
from vtc.engine import cache_of
from vtc.patches import adapter_for

from .builders import FAMILIES, tiny, unsupported_stages, video

RETAINS = (0.1, 0.25, 0.5)
NEW_TOKENS = 5


def _cache_lengths(cache) -> list[int]:
    return [layer.get_seq_length() for layer in cache.layers]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", vtc.list_methods())
@pytest.mark.parametrize("retain", RETAINS)
def test_method_generates_with_cache_matching_kept_tokens(family: str, name: str, retain: float) -> None:
    tm = tiny(family)
    inputs = tm.inputs([video(8)])
    prompt_len = inputs["input_ids"].shape[1]
    if unsupported_stages(family, name):
        with pytest.raises(NotImplementedError, match="cannot run"), vtc.compressed(tm.model, name, retain=retain):
            tm.model.generate(**inputs, max_new_tokens=1)
        return
    num_layers = len(adapter_for(tm.model).decoder_layers())
    if retain < vtc.get_method(name)().min_retain(num_layers):
        with pytest.raises(ValueError, match="FLOP-equivalent retention is at least"):
            vtc.wrap(tm.model, name, retain=retain)
        assert not vtc.is_wrapped(tm.model)
        return
    with vtc.compressed(tm.model, name, retain=retain), torch.no_grad():
        out = tm.model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
            return_dict_in_generate=True,
        )
        stats = tm.model.vtc_stats
    method = vtc.get_method(name)
    total = stats.visual_tokens[0]
    assert total == tm.visual_rows(inputs, 0).numel()
    assert out.sequences.shape[1] == prompt_len + NEW_TOKENS

    entering = stats.kept_indices[0]
    assert entering == sorted(set(entering)) and all(0 <= i < total for i in entering)
    if method.stage in ("select", "vision", "prefill"):
        final = entering
        assert stats.stages[-1].tokens_after == [len(entering)]
    elif method.stage == "cache":
        assert entering == list(range(total)) and not stats.layer_kept_indices, "a cache method leaves the prefill"
        assert len(stats.cache_steps) == NEW_TOKENS - 1, "one record per decode step"
        assert stats.cache_steps[0].reselected == [True]
        attended = {step.kept[0] for step in stats.cache_steps}
        assert len(attended) == 1
        final = list(range(attended.pop()))  # the count decode steps attend to at the method's layers
    else:
        parts = method().parts(num_layers, Budget(retain=retain))
        if not any(part.stage == "prefill" for part, _ in parts):  # framefusion merges the LLM input first
            assert entering == list(range(total)), "a layer method must not drop tokens before the LLM"
        cuts = sorted(stats.layer_kept_indices)
        assert cuts or len(entering) < total, "a layer method must cut somewhere"
        kept_by_cut = [stats.layer_kept_indices[layer][0] for layer in cuts]
        for before, after in zip([entering, *kept_by_cut], kept_by_cut):
            assert set(after) <= set(before), "each cut keeps a subset of what reached it"
        final = kept_by_cut[-1] if cuts else entering

    budget = Budget(retain=retain).count(total)
    if issubclass(method, ScoreMethod):
        assert len(final) == budget, "score methods meet the budget exactly"
    else:
        assert 0 < len(final) <= max(budget, total // 4), "structured methods stay within budget (or one frame)"
    assert len(final) < total

    lengths = _cache_lengths(cache_of(out))
    dropped_before = total - len(entering)
    decoded = NEW_TOKENS - 1  # the last generated token is never fed back
    expected_full = prompt_len - dropped_before + decoded
    if method.stage in ("select", "vision", "prefill", "cache"):
        assert lengths == [expected_full] * len(lengths)  # a cache method masks entries, it does not delete them
    else:
        bounds = [*cuts, len(lengths)]
        expected = [expected_full] * bounds[0]
        for start, end, kept in zip(bounds, bounds[1:], kept_by_cut):
            expected += [expected_full - (len(entering) - len(kept))] * (end - start)
        assert lengths == expected
    assert stats.retention == pytest.approx(len(entering) / total)
