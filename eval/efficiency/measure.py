"""One configuration (model, inputs, method, retain): prefill probe and decode probe.

The prefill probe is one forward with a KV cache and one position of logits (what ``generate``
runs before its first token): vision-encoder time and language-model time come from forward hooks
on those modules, vtc's stages from ``model.vtc_stats``, time to first token is the whole forward.
The decode probe runs ``generate`` for a fixed number of new tokens and times the language model
between the end of the prefill call and the end of the last call.
"""
from __future__ import annotations

import statistics
from contextlib import contextmanager
from typing import Iterator

import torch

import vtc
from vtc.engine import cache_of

from .config import shape_of
from .flops import per_layer_tokens, prefill_flops
from .protocol import PeakMemory, Stopwatch


@contextmanager
def compression(model, spec: str | None, retain: float) -> Iterator[None]:
    """``vtc.compressed`` for a method; nothing for the uncompressed baseline (spec None)."""
    if spec is None:
        yield
    else:
        with vtc.compressed(model, spec, retain=retain):
            yield


@contextmanager
def timing_hooks(model, watch: Stopwatch, lm_calls: list[tuple[float, float]] | None = None) -> Iterator[None]:
    """Marks around the vision tower and the language model (registered last: after vtc's hooks)."""
    base = model.model
    lm, visual = base.language_model, base.visual
    calls = [0]

    def lm_end(*_args) -> None:
        calls[0] += 1
        watch.mark(f"lm_end{calls[0]}")

    handles = [visual.register_forward_pre_hook(lambda *_: watch.mark("vision_start")),
               visual.register_forward_hook(lambda *_: watch.mark("vision_end")),
               lm.register_forward_pre_hook(lambda *_: watch.mark("lm_start") if calls[0] == 0 else None),
               lm.register_forward_hook(lm_end)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        watch.calls = calls[0]


KV_TENSORS = ("keys", "values", "prompt_keys", "prompt_values")  # the last two: a cache stage's whole prompt


def kv_bytes(cache) -> int:
    """Bytes held by a transformers cache's key and value tensors, every layer (a compacted layer's whole prompt
    and its compact copy both count)."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for name in KV_TENSORS
               if (t := getattr(layer, name, None)) is not None)


def tokens_per_layer(model, inputs: dict, stats) -> tuple[int, int, list[int]]:
    """Sample 0's visual tokens, those entering the LLM, and the positions each layer processes."""
    sequence = inputs["input_ids"].shape[1]
    if stats is not None:
        visual, kept = stats.visual_tokens[0], stats.tokens_kept[0]
        cuts = {k: len(v[0]) for k, v in stats.layer_kept_indices.items()}
    else:
        visual = kept = int((inputs["input_ids"][0] == model.config.video_token_id).sum())
        cuts = {}
    return visual, kept, per_layer_tokens(sequence, visual, kept, cuts, shape_of(model)["layers"])


def prefill_probe(model, inputs: dict, spec: str | None, retain: float) -> dict:
    """Times, memory, KV bytes, tokens per layer and FLOPs of one compressed prefill."""
    watch = Stopwatch(model.device)
    with compression(model, spec, retain), timing_hooks(model, watch), PeakMemory(model.device) as memory:
        watch.mark("start")
        with torch.no_grad():
            out = model(**inputs, use_cache=True, logits_to_keep=1)
            out.logits[:, -1].argmax(-1)
        watch.mark("end")
        stats = getattr(model, "vtc_stats", None) if spec else None
    shape = shape_of(model)
    sequence = inputs["input_ids"].shape[1]
    visual, kept, layers = tokens_per_layer(model, inputs, stats)
    stages = dict(stats.ms_per_stage) if stats is not None else {}
    total, total_cpu = watch.ms("start", "end")
    vision, vision_cpu = watch.ms("vision_start", "vision_end")
    llm, llm_cpu = watch.ms("lm_start", "lm_end1")
    return dict(method=spec or "none", retain=retain if spec else 1.0, visual_tokens=visual, kept_tokens=kept,
                last_layer_tokens=layers[-1] - (sequence - visual), stage_ms=stages, stage_ms_total=sum(stages.values()),
                vision_ms=vision, vision_cpu_ms=vision_cpu, llm_ms=llm, llm_cpu_ms=llm_cpu,
                ttft_ms=total, ttft_cpu_ms=total_cpu, peak_mib=memory.mib, kv_mib=kv_bytes(cache_of(out)) / 2**20,
                llm_gflop=prefill_flops(shape, layers) / 1e9)


def decode_probe(model, inputs: dict, spec: str | None, retain: float, new_tokens: int) -> dict:
    """Milliseconds per decoded token over ``new_tokens`` greedy tokens after the prefill: the mean, and the
    median of the per-token intervals (robust to another user's burst on a shared machine); the entries the last
    layer attended to at the last step and the cache's bytes then (read before unwrap restores a cache stage's
    compact layers)."""
    watch = Stopwatch(model.device)
    with compression(model, spec, retain), timing_hooks(model, watch), torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, do_sample=False,
                             return_dict_in_generate=True)
        stats = getattr(model, "vtc_stats", None) if spec else None
        cache = cache_of(out)
        attended, kv_end = cache.layers[-1].get_seq_length(), kv_bytes(cache) / 2**20
    _, _, layers = tokens_per_layer(model, inputs, stats)
    steps = watch.calls - 1
    wall, cpu = watch.ms("lm_end1", f"lm_end{watch.calls}")
    per_step = [watch.ms(f"lm_end{k}", f"lm_end{k + 1}") for k in range(1, watch.calls)]
    return dict(method=spec or "none", retain=retain if spec else 1.0, decode_tokens=steps,
                kv_tokens_last_layer=layers[-1], kv_attended_last_layer=attended, kv_mib_end=kv_end,
                decode_ms_per_token=wall / steps, decode_cpu_ms_per_token=cpu / steps,
                decode_median_ms=statistics.median(w for w, _ in per_step),
                decode_median_cpu_ms=statistics.median(c for _, c in per_step))
