"""Batched prefill throughput: videos per second at several batch sizes, left-padded, compressed or not."""
from __future__ import annotations

from .config import make_inputs
from .measure import prefill_probe
from .protocol import interleaved


def throughput(model, frames: int, size: int, batches: list[int], specs: list[tuple[str | None, float]],
               repeats: int, warmup: str = "round") -> list[dict]:
    """One row per (batch, method): median time to first token of the batch and videos per second.

    ``warmup="calls"`` warms up with each method once at the smallest batch instead of a whole round."""
    inputs = {b: make_inputs(model, frames, size, batch=b) for b in batches}
    configs = {(b, spec, retain): (lambda b=b, spec=spec, retain=retain: prefill_probe(model, inputs[b], spec, retain))
               for b in batches for spec, retain in specs}
    warm = [(min(batches), spec, retain) for spec, retain in specs] if warmup == "calls" else None
    runs = interleaved(configs, repeats=repeats, warm=warm, progress=lambda m: print("throughput:", m, flush=True))
    return [dict(batch=b, method=spec or "none", retain=retain if spec else 1.0, visual_tokens=r["visual_tokens"],
                 kept_tokens=r["kept_tokens"], ttft_ms=r["ttft_ms"],
                 ttft_cpu_ms=r["ttft_cpu_ms"], videos_per_s=b / r["ttft_ms"] * 1000.0,
                 videos_per_cpu_s=b / r["ttft_cpu_ms"] * 1000.0, peak_mib=r["peak_mib"])
            for (b, spec, retain), r in runs.items()]
