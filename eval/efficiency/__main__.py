"""Command line: ``python -m eval.efficiency [options]`` from the repository root (see --help)."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

import vtc

from . import report
from .config import build_model, describe, make_inputs
from .measure import decode_probe, prefill_probe
from .protocol import interleaved
from .scaling import SHAPE_7B, divprune_at, one_hour_selection, scaling
from .throughput import throughput

PARTS = ["prefill", "decode", "throughput", "scaling", "divprune"]


def prefill_methods() -> list[str]:
    """Every registered prefill-stage method, then FastV at layer 2 (the layer stage's reference)."""
    return [name for name in vtc.list_methods() if vtc.get_method(name).stage == "prefill"] + ["fastv@2"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.efficiency", description=__doc__)
    p.add_argument("--model", default="0.5b", help="a shape in eval/efficiency/config.py or a local checkpoint")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=392, help="frame side in pixels (392: 14x14 tokens per frame group)")
    p.add_argument("--methods", nargs="+", default=prefill_methods())
    p.add_argument("--retains", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    p.add_argument("--extra", nargs="*", default=[], metavar="SPEC:RETAIN",
                   help="configurations beyond methods x retains, e.g. random:1.0 when --retains leaves 1.0 out")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", choices=["round", "calls"], default="round",
                   help="round: one whole discarded round; calls: one discarded call per method at its smallest "
                        "retain (a round costs as much as a measured one at realistic sizes)")
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--decode-methods", nargs="*", default=["random"], help="decode cost follows the KV length only")
    p.add_argument("--decode-retains", nargs="*", type=float, default=[0.5, 0.25, 0.1])
    p.add_argument("--decode-repeats", type=int, default=None, help="default: --repeats")
    p.add_argument("--batches", nargs="*", type=int, default=[1, 4, 8])
    p.add_argument("--throughput-frames", type=int, default=32)
    p.add_argument("--throughput-size", type=int, default=224)
    p.add_argument("--throughput-methods", nargs="*", default=["dtd:0.25", "random:0.1"], metavar="SPEC:RETAIN")
    p.add_argument("--scaling-frames", nargs="*", type=int, default=[8, 32, 128, 512, 1024])
    p.add_argument("--scaling-dim", type=int, default=896)
    p.add_argument("--scaling-limit-s", type=float, default=20.0)
    p.add_argument("--divprune-tokens", nargs="*", type=int, default=[8232], help="multiples of 196; empty to skip")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    p.add_argument("--note", action="append", default=[],
                   help="a sentence for the results (e.g. what was cut to fit the time); repeatable")
    p.add_argument("--out", type=Path, default=Path("eval/results/efficiency_cpu"))
    return p.parse_args(argv)


def configs(methods: list[str], retains: list[float], extra: list[str]) -> list[tuple[str | None, float]]:
    """The uncompressed baseline, every method at every retain, then the extra ``SPEC:RETAIN`` configurations."""
    return [(None, 1.0)] + [(m, r) for m in methods for r in retains] + [split_config(e) for e in extra]


def split_config(text: str) -> tuple[str, float]:
    spec, _, retain = text.rpartition(":")
    return spec, float(retain)


def warm_calls(specs: list[tuple[str | None, float]]) -> list[str]:
    """One configuration per method, at its smallest retain: the cheapest call that runs its code."""
    smallest: dict[str | None, float] = {}
    for spec, retain in specs:
        if spec is not None:
            smallest[spec] = min(retain, smallest.get(spec, retain))
    return [f"{spec}:{retain}" for spec, retain in smallest.items()]


def measure(specs: list[tuple[str | None, float]], probe, repeats: int, warmup: str, label: str) -> list[dict]:
    """``probe(spec, retain)`` for every configuration, interleaved; median of ``repeats`` rounds."""
    runs = {f"{s}:{r}": (lambda s=s, r=r: probe(s, r)) for s, r in specs}
    warm = warm_calls(specs) if warmup == "calls" else None
    return list(interleaved(runs, repeats=repeats, warm=warm, progress=lambda m: print(f"{label}: {m}", flush=True))
                .values())


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    dtype = getattr(torch, args.dtype)
    rows, decode, batched, scaled, divprune = [], [], [], {}, []
    if {"prefill", "decode", "throughput"} & set(args.parts):
        model = build_model(args.model, args.device, dtype)
        inputs = make_inputs(model, args.frames, args.size)
    if "prefill" in args.parts:
        rows = measure(configs(args.methods, args.retains, args.extra),
                       lambda s, r: prefill_probe(model, inputs, s, r), args.repeats, args.warmup, "prefill")
        report.add_ratios(rows, gpu=args.device.startswith("cuda"))
    decode_repeats = args.decode_repeats or args.repeats
    if "decode" in args.parts:
        decode = measure(configs(args.decode_methods, args.decode_retains, []),
                         lambda s, r: decode_probe(model, inputs, s, r, args.decode_tokens), decode_repeats,
                         args.warmup, "decode")
    if "throughput" in args.parts:
        batched = throughput(model, args.throughput_frames, args.throughput_size, args.batches,
                             [(None, 1.0)] + [split_config(t) for t in args.throughput_methods], args.repeats,
                             args.warmup)
    if "scaling" in args.parts:
        plain = [m for m in args.methods if "@" not in m]
        scaled = scaling(plain, args.scaling_frames, args.scaling_dim, 0.25, args.repeats, args.scaling_limit_s,
                         torch.device(args.device))
    if "divprune" in args.parts:
        divprune = [divprune_at(n, SHAPE_7B["hidden"], SHAPE_7B, 0.25, args.repeats, torch.device(args.device))
                    for n in args.divprune_tokens]
    result = dict(
        meta=dict(command="python -m eval.efficiency " + shlex.join(argv if argv is not None else sys.argv[1:]),
                  model=args.model, shape=describe(args.model), frames=args.frames, size=args.size,
                  machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
                  torch=torch.__version__, threads=torch.get_num_threads(), device=args.device, dtype=args.dtype,
                  warmup=args.warmup, repeats=args.repeats, decode_repeats=decode_repeats, parts=args.parts,
                  notes=args.note, load_start=load_start, load_end=[round(x, 2) for x in os.getloadavg()]),
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
