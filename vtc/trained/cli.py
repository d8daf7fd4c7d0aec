"""``vtc train``: the command-line front of :mod:`vtc.trained.train`."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from ..catalogue import load as load_catalogue
from .config import TrainConfig


def register_cli(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a compressor with a LoRA adapter on the LLM (PEFT)")
    train.add_argument("--model", help="local checkpoint directory (default: the shipped reference model)")
    train.add_argument("--method", required=True, choices=load_catalogue()["trained"], help="which trained compressor")
    train.add_argument("--retain", type=float, required=True, help="fraction of visual tokens the compressor keeps")
    train.add_argument("--data", required=True, help="training items: a `vtc synth make` directory or a saved `datasets` dataset")
    train.add_argument("--out", required=True, help="where the adapter (and its resumable checkpoint) is written")
    train.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    train.add_argument("--eval-data", help="held-out items evaluated at the end (e.g. a `vtc synth make --seed 999999` dir)")
    train.add_argument("--eval-items", type=int, default=240, help="held-out items to evaluate (default 240)")
    train.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    defaults = TrainConfig()
    for field in fields(TrainConfig):
        if field.name in ("method", "retain"):
            continue
        value = getattr(defaults, field.name)
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(value, bool) else {"type": type(value)}
        train.add_argument(f"--{field.name.replace('_', '-')}", default=value, help=f"(default {value})", **kind)
    train.set_defaults(handler=_train)


def _check_train(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's config and checkpoint, from arguments checked before any model is loaded or step run."""
    from ..checks import at_least, check_device, check_input_dir, check_output_dir, model_path

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    path = model_path(args.model)
    check_input_dir(args.data, "--data")
    check_output_dir(args.out, "--out")
    if args.eval_data is not None:
        check_input_dir(args.eval_data, "--eval-data")
    at_least("--eval-items", args.eval_items, 1)
    if args.threads is not None:
        at_least("--threads", args.threads, 1)
    check_device(args.device)
    return cfg, path


def _train(args: argparse.Namespace) -> int:
    cfg, path = _check_train(args)
    import torch

    from ..runner import load_model
    from .train import CompressorTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load_model(path, device=args.device)
    trainer = CompressorTrainer(model, processor, args.data, cfg, args.out, resume=args.resume)
    trainer.train()
    summary = trainer.finish(args.eval_data, args.eval_items)
    print(json.dumps({"out": str(Path(args.out)), "config": asdict(cfg), **summary}, indent=2))
    return 0
