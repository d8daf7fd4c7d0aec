"""``vtc synth`` command. ``register_cli`` returns the ``synth`` sub-subparsers so other
modules can add commands beside ``make`` (e.g. ``vtc synth eval``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .tiers import DEFAULT_TIER, TIERS
from .vocab import QUESTION_TYPES

TIER_HELP = ("named size: " + ", ".join(f"{t.name} = {t.description}" for t in TIERS.values())
             + f" (default {DEFAULT_TIER})")


def register_cli(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``synth`` (with ``make``) to the ``vtc`` subparsers; returns synth's own subparsers.
    Each command sets ``handler`` (args -> exit code), as the ``vtc`` entry point expects."""
    synth = subparsers.add_parser("synth", help="procedural synthetic video-QA benchmark")
    commands = synth.add_subparsers(dest="synth_command", required=True)
    make = commands.add_parser("make", help="render a dataset: data.jsonl + videos/*.mp4")
    make.add_argument("--seed", type=int, required=True, help="dataset seed (same seed -> identical files)")
    make.add_argument("--count", type=int, required=True, help="number of items; types cycle")
    make.add_argument("--out", required=True, help="output directory")
    make.add_argument("--overwrite", action="store_true",
                      help="replace a dataset already in --out (its data.jsonl and videos are removed first)")
    make.add_argument("--tier", choices=list(TIERS), help=TIER_HELP)
    make.add_argument("--num-frames", type=int, help="frames per video, even, >= 16 (default: the tier's)")
    make.add_argument("--size", type=int, help="frame side in pixels, even, >= 68 (default: the tier's)")
    make.add_argument("--fps", type=float, default=4.0, help="frame rate written to the mp4 (default 4)")
    make.add_argument("--types", type=lambda s: s.split(","), default=None,
                      help=f"comma-separated subset of {','.join(QUESTION_TYPES)} (default all)")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(handler=_make)
    _add_eval(commands)
    _add_demo(commands)
    return commands


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local checkpoint (default: the shipped reference model)")
    parser.add_argument("--method", help="vtc method name or spec (default: no compression)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--retain", type=float, help="fraction of visual tokens to keep")
    budget.add_argument("--tokens", type=int, help="absolute number of visual tokens to keep")
    parser.add_argument("--tier", choices=list(TIERS), help="the dataset's tier: sets --num-frames; " + TIER_HELP)
    parser.add_argument("--num-frames", type=int, help="frames decoded per video (default: the tier's, 16 for fast)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _add_eval(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("eval", help="answer every item; accuracy by type, tokens, evidence kept")
    ev.add_argument("dir", help="dataset directory written by `vtc synth make`")
    _add_model_args(ev)
    ev.add_argument("--limit", type=int, help="only the first N items (N >= 1)")
    ev.add_argument("--batch-size", type=int, default=16, help="items per forward (default 16)")
    ev.add_argument("--json", required=True, help="where to write the results")
    ev.set_defaults(handler=_eval)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="answer one item and show the ground truth and the stats")
    demo.add_argument("dir", help="dataset directory written by `vtc synth make`")
    demo.add_argument("--index", type=int, default=0, help="which item (default 0)")
    _add_model_args(demo)
    demo.set_defaults(handler=_demo)


def _check_model_args(args: argparse.Namespace) -> Path:
    """Checkpoint, frames, budget, method and device, before any model is loaded; returns the checkpoint."""
    from vtc.checks import at_least, check_device, check_method_syntax, model_path

    path = model_path(args.model)
    args.num_frames = tier_value(args, "num_frames")
    at_least("--num-frames", args.num_frames, 1)
    if args.method is None and (args.retain is not None or args.tokens is not None):
        raise ValueError("--retain/--tokens need --method")
    budget = check_method_syntax(args.method, args.retain, args.tokens)
    check_device(args.device)
    if args.method is not None:
        from vtc.pipeline import check_method  # the registry: imports torch

        check_method(args.method, budget)
    return path


def _load(args: argparse.Namespace, path: Path) -> tuple[Any, Any]:
    import vtc
    from vtc.runner import load_model

    model, processor = load_model(path, device=args.device)
    if args.method:
        vtc.wrap(model, args.method, retain=args.retain, tokens=args.tokens)
    return model, processor


def _check_eval(args: argparse.Namespace) -> tuple[Path, Path]:
    """Dataset, batching and output file, then the model arguments; returns (checkpoint, output file)."""
    from vtc.checks import at_least, check_output_file

    from .dataset import load_dataset

    if not load_dataset(args.dir):
        raise ValueError(f"{args.dir} holds no items")
    at_least("--batch-size", args.batch_size, 1)
    if args.limit is not None:
        at_least("--limit", args.limit, 1)
    out = check_output_file(args.json, "--json")
    return _check_model_args(args), out


def _eval(args: argparse.Namespace) -> int:
    path, out = _check_eval(args)
    import json

    from .evaluate import evaluate

    model, processor = _load(args, path)
    result = evaluate(args.dir, model, processor, num_frames=args.num_frames, batch_size=args.batch_size,
                      limit=args.limit)
    result.update(method=args.method, retain=args.retain, tokens=args.tokens, model=str(args.model or "reference"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("overall", "by_type", "n", "tokens_in", "tokens_kept")}, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .dataset import load_dataset

    items = load_dataset(args.dir)
    if not 0 <= args.index < len(items):
        raise ValueError(f"--index {args.index} is out of range: {args.dir} holds {len(items)} items")
    item = items[args.index]
    path = _check_model_args(args)
    from .evaluate import answer_item
    from .model import parse_answer, question_text

    model, processor = _load(args, path)
    reply = answer_item(model, processor, Path(args.dir), item, num_frames=args.num_frames)
    print(f"video: {Path(args.dir) / item['video']}  ({item['type']} question)")
    print(question_text(item))
    print(f"model answer: {reply}  -> option {parse_answer(reply, item['options'])}")
    print(f"ground truth: {item['answer']}. {item['answer_text']}")
    stats = getattr(model, "vtc_stats", None)
    if stats is not None:
        print(stats.table())
    return 0


def tier_value(args: argparse.Namespace, field: str) -> int:
    """``field`` as given, else the tier's; giving both is refused, since they could disagree."""
    given = getattr(args, field)
    if given is not None and args.tier is not None:
        raise ValueError(f"--{field.replace('_', '-')} and --tier both set the {field.replace('_', ' ')}; give one")
    return given if given is not None else getattr(TIERS[args.tier or DEFAULT_TIER], field)


def _make(args: argparse.Namespace) -> int:
    from .dataset import make_dataset

    args.num_frames, args.size = tier_value(args, "num_frames"), tier_value(args, "size")
    out = make_dataset(args.out, args.seed, args.count, num_frames=args.num_frames, size=args.size,
                       fps=args.fps, types=args.types, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {args.count} items to {out / 'data.jsonl'}")
    return 0
