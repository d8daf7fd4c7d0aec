"""Time of the compression step alone, per method, on the features of a long video.

The issue's yardstick: 64 frames x 196 tokens per frame (LLaVA-OneVision's 14x14 grid), D=3584
(a 7B LLM's hidden size). Random features stand in for real ones: every method here is
data-independent in cost except through its budget. Run from the repository root:

    python eval/bench_methods.py --out eval/results/method_ms_cpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import vtc
from vtc import Budget, VisualTokens


def features(frames: int, side: int, dim: int, seed: int = 0) -> VisualTokens:
    """Video-like features: a static background per position plus per-frame noise and drift."""
    generator = torch.Generator().manual_seed(seed)
    background = torch.randn(side * side, dim, generator=generator)
    noise = torch.randn(frames, side * side, dim, generator=generator) * 0.3
    drift = torch.linspace(0, 1, frames)[:, None, None] * torch.randn(1, side * side, dim, generator=generator)
    x = (background[None] + noise + drift).reshape(frames * side * side, dim)
    return VisualTokens.from_grid(x, (frames, side, side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--side", type=int, default=14)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--retain", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("eval/results/method_ms_cpu.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = [round(x, 2) for x in os.getloadavg()]
    tokens = features(args.frames, args.side, args.dim)
    budget = Budget(retain=args.retain)
    rows = []
    for name in vtc.list_methods():
        cls = vtc.get_method(name)
        if cls.stage != "prefill":
            continue
        method = cls()
        best, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            selection = method.compress(tokens, method.resolve_budget(budget))
            best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
        rows.append({"method": name, "ms": best * 1000.0, "cpu_ms": best_cpu * 1000.0, "kept": int(selection.keep.numel()),
                     "budget": budget.count(len(tokens))})
        print(f"{name}: {best * 1000.0:.1f} ms, kept {selection.keep.numel()}", flush=True)
    n = len(tokens)
    lines = [
        f"# Compression step alone: {args.frames} frames x {args.side}x{args.side} tokens (N={n}), D={args.dim}, "
        f"retain {args.retain}",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
        f"best of {args.repeats}, wall and process CPU time; load average at start {load} (shared machine). "
        "Command: `python eval/bench_methods.py` (defaults). Layer-stage methods are timed inside the model by "
        "`python -m eval.efficiency`; cost against video length: eval/results/efficiency_scaling_cpu.md.",
        "",
        "| method | ms (cpu) | tokens kept / budget |",
        "|---|---|---|",
    ] + [f"| {r['method']} | {r['ms']:.1f} ({r['cpu_ms']:.1f}) | {r['kept']} / {r['budget']} |" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
