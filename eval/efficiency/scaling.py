"""Compression cost vs video length, DivPrune at the 7B shape, and the one-hour selection record.

The compression step runs alone on random video-like features (no model), so the 1,024-frame point
(200,704 tokens) fits a CPU; a point is skipped when the last two points predict it would take
longer than ``limit_s``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

import vtc
from eval.bench_methods import features
from vtc import Budget

from .flops import prefill_flops
from .protocol import PeakMemory, interleaved

SIDE = 14  # 196 tokens per frame
SHAPE_7B = dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944)


def compress_once(name: str, tokens, retain: float) -> dict:
    method = vtc.get_method(name)()
    with PeakMemory(tokens.features.device) as memory:
        start, cpu = time.perf_counter(), time.process_time()
        selection = method.compress(tokens, method.resolve_budget(Budget(retain=retain)))
        wall_ms, cpu_ms = (time.perf_counter() - start) * 1000.0, (time.process_time() - cpu) * 1000.0
    return dict(ms=wall_ms, cpu_ms=cpu_ms, peak_mib=memory.mib, kept=int(selection.keep.numel()))


def fit_exponent(frames: list[int], cpu_ms: list[float]) -> float:
    """Least-squares slope of log(time) on log(frames): 1 is linear, 2 quadratic."""
    if len(frames) < 2:
        return float("nan")
    xs, ys = [math.log(f) for f in frames], [math.log(max(t, 1e-3)) for t in cpu_ms]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def predicted_ms(points: list[dict], frames: int) -> float:
    if len(points) < 2:
        return 0.0
    a, b = points[-2], points[-1]
    slope = max(1.0, fit_exponent([a["frames"], b["frames"]], [a["cpu_ms"], b["cpu_ms"]]))
    return b["cpu_ms"] * (frames / b["frames"]) ** slope


def scaling(methods: list[str], frame_counts: list[int], dim: int, retain: float, repeats: int, limit_s: float) -> dict:
    """Per method: CPU ms, wall ms and peak MiB at each frame count, and the fitted exponent."""
    points: dict[str, list[dict]] = {m: [] for m in methods}
    skipped: dict[str, list[int]] = {m: [] for m in methods}
    for frames in frame_counts:
        tokens = features(frames, SIDE, dim)
        live = [m for m in methods if not skipped[m] and predicted_ms(points[m], frames) <= limit_s * 1000.0]
        for m in set(methods) - set(live):
            skipped[m].append(frames)
        big = frames * SIDE * SIDE > 30_000
        runs = interleaved({m: (lambda m=m: compress_once(m, tokens, retain)) for m in live},
                           repeats=1 if big else repeats, warmup=0 if big else 1, progress=lambda _: None)
        for m, row in runs.items():
            points[m].append(dict(row, frames=frames, tokens=frames * SIDE * SIDE))
        print(f"scaling: {frames} frames done ({len(live)} methods)", flush=True)
        del tokens
    return {m: dict(points=points[m], skipped_frames=skipped[m],
                    exponent=fit_exponent([p["frames"] for p in points[m]], [p["cpu_ms"] for p in points[m]]))
            for m in methods}


def gemm_gflops(repeats: int = 3) -> float:
    """This process's float32 matrix-product throughput on the current threads (CPU time)."""
    a, b = torch.randn(2048, 3584), torch.randn(3584, 3584)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * 2048 * 3584 * 3584 / best / 1e9


def divprune_at(tokens: int, dim: int, shape: dict, retain: float, repeats: int) -> dict:
    """DivPrune's CPU time on ``tokens`` x ``dim`` features against a FLOP-estimated prefill of ``shape``."""
    frames = tokens // (SIDE * SIDE)
    data = features(frames, SIDE, dim)
    run = interleaved({"divprune": lambda: compress_once("divprune", data, retain)}, repeats=repeats, warmup=0,
                      progress=lambda _: None)["divprune"]
    gflops = gemm_gflops()
    flops = prefill_flops(shape, [tokens + 64] * shape["layers"])
    prefill_cpu_ms = flops / (gflops * 1e9) * 1000.0
    return dict(run, tokens=frames * SIDE * SIDE, dim=dim, retain=retain, gemm_gflops=gflops, prefill_tflop=flops / 1e12,
                prefill_cpu_ms_estimate=prefill_cpu_ms, share_of_prefill=run["cpu_ms"] / prefill_cpu_ms)


def one_hour_selection(path: Path = Path("eval/results/select_memory.json")) -> dict | None:
    """The committed one-hour 1 fps selection measurement (eval/select_memory.py), when present."""
    return json.loads(path.read_text()) if path.is_file() else None
