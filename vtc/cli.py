"""The ``vtc`` command: run, list (and the subcommands other modules register, e.g. synth)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .viz.cli import register_cli as register_viz


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtc", description="Video token compression for transformers VLMs")
    parser.add_argument("--version", action="version", version=f"vtc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    listing = commands.add_parser("list", help="registered methods and supported model families")
    listing.add_argument("--markdown", action="store_true", help="print the README's support tables")
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
    run.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    run.add_argument("--attn", default=None, help="attention implementation: sdpa, flash_attention_2, eager")
    run.add_argument("--json", type=Path, help="write the answer and vtc_stats as JSON here")
    run.set_defaults(handler=_run)


def _add_optional_commands(commands: argparse._SubParsersAction) -> None:
    """Subcommands that live beside the core (the synthetic benchmark ships in the same package)."""
    from .trained.cli import register_cli as register_train

    register_train(commands)
    try:
        from .synth.cli import register_cli
    except ImportError:
        return
    register_cli(commands)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    from .bench.cli import register_cli

    register_cli(commands)


def _run(args: argparse.Namespace) -> int:
    import vtc

    from .runner import build_inputs, default_model_path, default_sampling, generate_answers, load_model, time_prefill
    from .video import damage_note, load_video

    model_path = args.model or default_model_path()
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
    from .support import markdown_tables, method_rows

    if args.markdown:
        print(markdown_tables())
        return 0
    import vtc

    print("methods:")
    for name, stage, summary in method_rows():
        print(f"  {name:<10} {stage:<8} {summary}")
    print("model families (config.model_type):")
    for model_type in vtc.supported_model_types():
        print(f"  {model_type}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"vtc: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
