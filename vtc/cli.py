"""The ``vtc`` command: run, list (and the subcommands other modules register, e.g. synth).

Parsers come from torch-free modules and handlers import what they need, so ``--help``, ``--version``,
``list`` and argument errors start in a fraction of a second; every argument is checked before a
model is loaded or a video decoded."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .checks import ATTENTION, DTYPES
from .viz.cli import register_cli as register_viz


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtc", description="Video token compression for transformers VLMs")
    parser.add_argument("--version", action="version", version=f"vtc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    listing = commands.add_parser("list", help="registered methods and supported model families")
    listing.add_argument("--markdown", action="store_true",
                         help="print the README's support tables (generated from the live registry: loads torch)")
    listing.set_defaults(handler=_list)
    _add_optional_commands(commands)
    _add_bench(commands)
    register_viz(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="answer a question about a video, with compression and its stats")
    run.add_argument("video", help="local video file")
    run.add_argument("question")
    run.add_argument("--model", help="local checkpoint directory (default: the shipped reference model)")
    run.add_argument("--method", default="dtd", help="method name or spec, e.g. 'dtd:0.5>fastv@2:0.5' (default dtd)")
    run.add_argument("--no-compression", action="store_true", help="run the unwrapped model")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--retain", type=float, help="fraction of visual tokens to keep")
    budget.add_argument("--tokens", type=int, help="absolute number of visual tokens to keep")
    sampling = run.add_mutually_exclusive_group()
    sampling.add_argument("--num-frames", type=int, help="evenly spaced frames to decode (default: the checkpoint's "
                          "own choice in its video processor config, e.g. 16 for the shipped model, else 1 fps)")
    sampling.add_argument("--fps", type=float, help="frames per second to decode (default: see --num-frames)")
    run.add_argument("--max-new-tokens", type=int, default=16)
    run.add_argument("--compare", action="store_true", help="also time the uncompressed prefill and report the speed-up")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    run.add_argument("--dtype", default="auto", choices=DTYPES, help="model dtype (default auto: the checkpoint's)")
    run.add_argument("--attn", default=None, choices=ATTENTION, help="attention implementation (default: transformers')")
    run.add_argument("--json", type=Path, help="write the answer and vtc_stats as JSON here")
    run.set_defaults(handler=_run)


def _add_optional_commands(commands: argparse._SubParsersAction) -> None:
    """Subcommands that live beside the core (the synthetic benchmark ships in the same package)."""
    from .dymu_thresholds import register_cli as register_dymu
    from .trained.cli import register_cli as register_train

    register_train(commands)
    register_dymu(commands)
    try:
        from .synth.cli import register_cli
    except ImportError:
        return
    register_cli(commands)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    from .bench.cli import register_cli

    register_cli(commands)


def _check_run(args: argparse.Namespace) -> Path:
    """Every ``vtc run`` argument, torch-free ones first; returns the checkpoint directory."""
    from .checks import (at_least, check_attn, check_device, check_method_syntax, check_output_file, check_video,
                         model_path, positive)

    check_video(args.video)
    path = model_path(args.model)
    if args.json is not None:
        check_output_file(args.json, "--json")
    at_least("--max-new-tokens", args.max_new_tokens, 1)
    if args.num_frames is not None:
        at_least("--num-frames", args.num_frames, 1)
    if args.fps is not None:
        positive("--fps", args.fps)
    check_attn(args.attn)
    if args.no_compression and (args.retain is not None or args.tokens is not None):
        raise ValueError("--retain/--tokens set a compression budget; drop them or --no-compression")
    budget = check_method_syntax(None if args.no_compression else args.method, args.retain, args.tokens)
    check_device(args.device)
    if not args.no_compression:
        from .pipeline import check_method

        check_method(args.method, budget)
    return path


def _run(args: argparse.Namespace) -> int:
    model_path = _check_run(args)
    import vtc

    from .runner import build_inputs, default_sampling, generate_answers, load_model, time_prefill
    from .video import damage_note, load_video

    model, processor = load_model(model_path, device=args.device, dtype=args.dtype, attn_implementation=args.attn)
    num_frames, fps = (args.num_frames, args.fps) if args.num_frames or args.fps else default_sampling(processor)
    video = load_video(args.video, num_frames=num_frames, fps=fps, progress=True)
    inputs = build_inputs(processor, [video], [args.question])
    baseline = time_prefill(model, inputs) if args.compare else None
    if not args.no_compression:
        vtc.wrap(model, args.method, retain=args.retain, tokens=args.tokens)
    answer = generate_answers(model, processor, inputs, args.max_new_tokens)[0]
    stats = getattr(model, "vtc_stats", None)
    compressed = time_prefill(model, inputs) if args.compare else None
    if len(video.damaged_frames) and stats is not None:  # load_video has warned; the table and JSON say it too
        stats.notes.append(f"video: {damage_note(video.damaged_frames)}")

    print(f"answer: {answer}")
    print(f"video: {len(video.indices)} of {video.total_frames} frames at {video.source_fps:.3g} fps"
          + (" (clamped: fewer frames exist than requested)" if video.clamped else ""))
    if stats is not None:
        print(stats.table())
        if stats.selected_frames:
            print(f"frames kept by the select stage (source indices): {_source_frames(video.indices, stats.selected_frames[0])}")
    if baseline and compressed:
        print(f"prefill: {baseline.ms:.1f} ms uncompressed -> {compressed.ms:.1f} ms compressed "
              f"({baseline.ms / compressed.ms:.2f}x, best of {compressed.repeats})")
    if args.json:
        record = {
            "answer": answer, "question": args.question, "video": str(args.video), "model": str(model_path),
            "method": None if args.no_compression else args.method,
            "frames": [int(i) for i in video.indices], "timestamps": [float(t) for t in video.timestamps],
            "clamped": video.clamped, "damaged_frames": [int(i) for i in video.damaged_frames],
            "stats": stats.to_dict() if stats is not None else None,
        }
        if baseline and compressed:
            record["prefill_ms"] = {"uncompressed": baseline.ms, "compressed": compressed.ms}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2))
    return 0


def _source_frames(indices: Sequence[int], selected: list[int]) -> list[int]:
    """Source indices of the frames the select stage kept.

    A processor that stacks frames in pairs (the Qwen VL line) pads an odd frame count by repeating
    the last frame, so the stats can name one frame past the decoded ones: that is the last frame.
    """
    last = len(indices) - 1
    return sorted({int(indices[min(frame, last)]) for frame in selected})


def _list(args: argparse.Namespace) -> int:
    """Methods and families from the stored catalogue (no torch); ``--markdown`` reads the live registry."""
    if args.markdown:
        from .support import markdown_tables

        print(markdown_tables())
        return 0
    from .catalogue import load

    catalogue = load()
    print("methods:")
    for name, stage, summary in catalogue["methods"]:
        print(f"  {name:<14} {stage:<8} {summary}")
    print("model families (config.model_type):")
    for model_type in catalogue["model_types"]:
        print(f"  {model_type}")
    print(f"trained compressors (`vtc train --method`, then --method trained:DIR): {', '.join(catalogue['trained'])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # str(KeyError) adds quotes
        print(f"vtc: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
