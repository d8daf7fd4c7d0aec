"""``vtc synth`` command. ``register_cli`` returns the ``synth`` sub-subparsers so other
modules can add commands beside ``make`` (e.g. ``vtc synth eval``)."""

from __future__ import annotations

import argparse

from .vocab import QUESTION_TYPES


def register_cli(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``synth`` (with ``make``) to the ``vtc`` subparsers; returns synth's own subparsers.
    Each command sets ``handler`` (args -> exit code), as the ``vtc`` entry point expects."""
    synth = subparsers.add_parser("synth", help="procedural synthetic video-QA benchmark")
    commands = synth.add_subparsers(dest="synth_command", required=True)
    make = commands.add_parser("make", help="render a dataset: data.jsonl + videos/*.mp4")
    make.add_argument("--seed", type=int, required=True, help="dataset seed (same seed -> identical files)")
    make.add_argument("--count", type=int, required=True, help="number of items; types cycle")
    make.add_argument("--out", required=True, help="output directory")
    make.add_argument("--num-frames", type=int, default=16, help="frames per video, even, >= 16 (default 16)")
    make.add_argument("--size", type=int, default=112, help="frame side in pixels, even, >= 64 (default 112)")
    make.add_argument("--fps", type=float, default=4.0, help="frame rate written to the mp4 (default 4)")
    make.add_argument("--types", type=lambda s: s.split(","), default=None,
                      help=f"comma-separated subset of {','.join(QUESTION_TYPES)} (default all)")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(handler=_make)
    return commands


def _make(args: argparse.Namespace) -> int:
    from .dataset import make_dataset

    out = make_dataset(args.out, args.seed, args.count, num_frames=args.num_frames, size=args.size,
                       fps=args.fps, types=args.types, progress=not args.quiet)
    print(f"wrote {args.count} items to {out / 'data.jsonl'}")
    return 0
