"""Compression cost vs video length, DivPrune at the 7B shape, and the one-hour selection record.

The compression step runs alone on random video-like features (no model), so the 1,024-frame point
(200,704 tokens) fits a CPU; a point is skipped when the last two points predict it would take
longer than ``limit_s``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

import vtc
from eval.bench_methods import features
from vtc import Budget

from .flops import prefill_flops
from .protocol import PeakMemory, Stopwatch, interleaved

SIDE = 14  # 196 tokens per frame
SHAPE_7B = dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944)


def compress_once(name: str, tokens, retain: float) -> dict:
    """One compression step: wall (GPU-event on CUDA) and CPU ms, and ``cost_ms``, the one the fits use:
    CPU time on CPU (other users' load shows less in it), GPU time on CUDA."""
    method = vtc.get_method(name)()
    device = tokens.features.device
    watch = Stopwatch(device)
    with PeakMemory(device) as memory:
        watch.mark("start")
        selection = method.compress(tokens, method.resolve_budget(Budget(retain=retain)))
        watch.mark("end")
    wall_ms, cpu_ms = watch.ms("start", "end")
    return dict(ms=wall_ms, cpu_ms=cpu_ms, cost_ms=wall_ms if watch.cuda else cpu_ms, peak_mib=memory.mib,
                kept=int(selection.keep.numel()))


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
    slope = max(1.0, fit_exponent([a["frames"], b["frames"]], [a["cost_ms"], b["cost_ms"]]))
    return b["cost_ms"] * (frames / b["frames"]) ** slope


def scaling(methods: list[str], frame_counts: list[int], dim: int, retain: float, repeats: int, limit_s: float,
            device: torch.device = torch.device("cpu")) -> dict:
    """Per method: CPU ms, wall ms and peak MiB at each frame count, and the exponent fitted to ``cost_ms``."""
    points: dict[str, list[dict]] = {m: [] for m in methods}
    skipped: dict[str, list[int]] = {m: [] for m in methods}
    for frames in frame_counts:
        tokens = features(frames, SIDE, dim).to(device)
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
                    exponent=fit_exponent([p["frames"] for p in points[m]], [p["cost_ms"] for p in points[m]]))
            for m in methods}


def gemm_gflops(device: torch.device, repeats: int = 3) -> float:
    """float32 matrix-product throughput on ``device``: CPU time on the current threads, GPU time on CUDA."""
    a, b = torch.randn(2048, 3584, device=device), torch.randn(3584, 3584, device=device)
    watch, best = Stopwatch(device), float("inf")
    for _ in range(repeats + 1):
        watch.mark("start")
        a @ b
        watch.mark("end")
        wall_ms, cpu_ms = watch.ms("start", "end")
        best = min(best, wall_ms if watch.cuda else cpu_ms)
    return 2 * 2048 * 3584 * 3584 / (best / 1000.0) / 1e9


def divprune_at(tokens: int, dim: int, shape: dict, retain: float, repeats: int,
                device: torch.device = torch.device("cpu")) -> dict:
    """DivPrune's time on ``tokens`` x ``dim`` features against a prefill of ``shape`` estimated from its FLOPs
    at this device's measured matrix-product throughput (CPU time on CPU, GPU time on CUDA)."""
    frames = tokens // (SIDE * SIDE)
    data = features(frames, SIDE, dim).to(device)
    run = interleaved({"divprune": lambda: compress_once("divprune", data, retain)}, repeats=repeats, warmup=0,
                      progress=lambda _: None)["divprune"]
    gflops = gemm_gflops(device)
    flops = prefill_flops(shape, [tokens + 64] * shape["layers"])
    prefill_ms = flops / (gflops * 1e9) * 1000.0
    return dict(run, tokens=frames * SIDE * SIDE, dim=dim, retain=retain, gemm_gflops=gflops, prefill_tflop=flops / 1e12,
                prefill_ms_estimate=prefill_ms, share_of_prefill=run["cost_ms"] / prefill_ms)


def one_hour_selection(path: Path = Path("eval/results/select_memory.json")) -> dict | None:
    """The committed one-hour 1 fps selection measurement (eval/select_memory.py), when present."""
    return json.loads(path.read_text()) if path.is_file() else None
