"""Command line: ``python -m eval.efficiency [options]`` from the repository root (see --help)."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from . import report
from .config import build_model, describe, make_inputs
from .measure import decode_probe, prefill_probe
from .protocol import interleaved
from .scaling import SHAPE_7B, divprune_at, one_hour_selection, scaling
from .throughput import throughput

PARTS = ["prefill", "decode", "throughput", "scaling", "divprune"]
METHODS = ["random", "dtd", "vidcom2", "fastvid", "holitom", "divprune", "fastv@2"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.efficiency", description=__doc__)
    p.add_argument("--model", default="0.5b", help="a shape in eval/efficiency/config.py or a local checkpoint")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--retains", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--decode-methods", nargs="*", default=["random"], help="decode cost follows the KV length only")
    p.add_argument("--batches", nargs="*", type=int, default=[1, 4, 8])
    p.add_argument("--throughput-frames", type=int, default=8)
    p.add_argument("--throughput-size", type=int, default=112)
    p.add_argument("--throughput-method", default="dtd:0.25")
    p.add_argument("--scaling-frames", nargs="*", type=int, default=[8, 32, 128, 512, 1024])
    p.add_argument("--scaling-dim", type=int, default=896)
    p.add_argument("--scaling-limit-s", type=float, default=20.0)
    p.add_argument("--divprune-tokens", nargs="*", type=int, default=[8232], help="multiples of 196; empty to skip")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    p.add_argument("--decode-retains", nargs="*", type=float, default=[0.1])
    p.add_argument("--out", type=Path, default=Path("eval/results/efficiency_cpu"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    dtype = getattr(torch, args.dtype)
    say = lambda m: print(m, flush=True)  # noqa: E731
    rows, decode, batched, scaled, divprune = [], [], [], {}, []
    if {"prefill", "decode", "throughput"} & set(args.parts):
        model = build_model(args.model, args.device, dtype)
        inputs = make_inputs(model, args.frames, args.size)
    specs = [(None, 1.0)] + [(m, r) for m in args.methods for r in args.retains]
    if "prefill" in args.parts:
        prefill = interleaved({f"{s}:{r}": (lambda s=s, r=r: prefill_probe(model, inputs, s, r)) for s, r in specs},
                              repeats=args.repeats, progress=lambda m: say("prefill: " + m))
        rows = list(prefill.values())
        report.add_ratios(rows)
    decode_specs = [(None, 1.0)] + [(m, r) for m in args.decode_methods for r in args.decode_retains]
    if "decode" in args.parts:
        decode = list(interleaved({f"{s}:{r}": (lambda s=s, r=r: decode_probe(model, inputs, s, r, args.decode_tokens))
                               for s, r in decode_specs}, repeats=args.repeats,
                                  progress=lambda m: say("decode: " + m)).values())
    spec, _, retain = args.throughput_method.rpartition(":")
    if "throughput" in args.parts:
        batched = throughput(model, args.throughput_frames, args.throughput_size, args.batches,
                             [(None, 1.0), (spec, float(retain))], args.repeats)
    prefill_methods = [m for m in args.methods if "@" not in m]
    if "scaling" in args.parts:
        scaled = scaling(prefill_methods, args.scaling_frames, args.scaling_dim, 0.25, args.repeats, args.scaling_limit_s)
    if "divprune" in args.parts:
        divprune = [divprune_at(n, SHAPE_7B["hidden"], SHAPE_7B, 0.25, args.repeats) for n in args.divprune_tokens]
    result = dict(
        meta=dict(command="python -m eval.efficiency " + shlex.join(argv if argv is not None else sys.argv[1:]),
                  model=args.model, shape=describe(args.model), frames=args.frames, size=args.size,
                  machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
                  torch=torch.__version__, threads=torch.get_num_threads(), device=args.device, dtype=args.dtype,
                  warmup=1, repeats=args.repeats, parts=args.parts, load_start=load_start,
                  load_end=[round(x, 2) for x in os.getloadavg()]),
        prefill=rows, decode=decode, throughput=batched,
        throughput_meta=dict(frames=args.throughput_frames, size=args.throughput_size),
        scaling=scaled, scaling_meta=dict(frames=args.scaling_frames, dim=args.scaling_dim, side=14, retain=0.25,
                                          limit_s=args.scaling_limit_s),
        divprune=divprune, one_hour=one_hour_selection() if "scaling" in args.parts else None)
    report.write(result, args.out)
    print(args.out.with_suffix(".md").read_text())
    return result


if __name__ == "__main__":
    main()
