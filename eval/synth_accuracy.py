"""Accuracy of the reference model(s) on the held-out synthetic split, uncompressed and under every method.

Writes eval/results/synth_accuracy.md and .json. Run from the repository root:

    python eval/synth_accuracy.py --models vtc/assets/reference-model eval/checkpoints/reference-seed2 \
        --items 240 --methods random uniform pool dtd fastv divprune vidcom2 dycoke fastvid holitom prunevid evad centerclip

After changing one method, ``--update --methods NAME`` recomputes only its rows in the existing table.
Two models can run in parallel with their own ``--out``; ``--merge B.json --out A`` then joins them.
``--tier scale`` measures the at-scale tier (224 px, 32 frames, 1,024 visual tokens; see vtc.synth.tiers)
instead of the default fast tier (112 px, 16 frames, 128 tokens).

The held-out split is generated from a seed never used for training data (vtc.synth.train.HELD_OUT_SEED).
The command that produced a table is written at its top.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Callable

import torch

import vtc
from vtc.runner import load_model
from vtc.synth import QUESTION_TYPES, TIERS, Tier, make_dataset
from vtc.synth.evaluate import evaluate, prepare
from vtc.synth.table import accuracy_evidence_cells, chance_line
from vtc.synth.train import HELD_OUT_SEED

METHODS = ["random", "uniform", "pool", "dtd", "fastv"]
RETAINS = [0.5, 0.25, 0.1]


def run(models: list[Path], data: Path, items: int, methods: list[str], retains: list[float],
        paper_methods: list[str] = (), tier: Tier = TIERS["fast"],
        on_row: Callable[[dict], None] = lambda results: None) -> dict:
    """Every model uncompressed and under every (method, retain); ``on_row(results)`` after each row, so that
    a long run (hours at the scale tier) leaves its finished rows on disk if it is stopped."""
    if not (data / "data.jsonl").is_file():
        make_dataset(data, seed=HELD_OUT_SEED, count=items, num_frames=tier.num_frames, size=tier.size)
    results: dict = {"data": str(data), "items": items, "seed": HELD_OUT_SEED, "tier": tier.name, "models": {}}
    for path in models:
        torch.manual_seed(0)
        model, processor = load_model(path, device="cpu")
        batches = prepare(data, processor, num_frames=tier.num_frames, limit=items)
        rows = results["models"][str(path)] = [{"method": "none", "retain": 1.0,
                                                **evaluate(data, model, processor, batches=batches)}]
        on_row(results)
        runs = [(m, r) for m in methods for r in retains] + [(m, "paper") for m in paper_methods]
        for method, retain in runs:
            try:
                vtc.wrap(model, method, retain=None if retain == "paper" else retain)
            except ValueError as err:  # a budget the method cannot mean on this model (e.g. below its floor)
                rows.append({"method": method, "retain": retain, "refused": str(err)})
                print(f"{path} {method}@{retain}: refused ({err})", flush=True)
                on_row(results)
                continue
            try:
                rows.append({"method": method, "retain": retain,
                             **evaluate(data, model, processor, batches=batches, progress=False)})
            finally:
                vtc.unwrap(model)
            print(f"{path} {method}@{retain}: {rows[-1]['overall']:.3f}", flush=True)
            on_row(results)
    return results


def merge(existing: dict, fresh: dict) -> dict:
    """``existing`` with every (model, method, retain) row that ``fresh`` recomputed replaced in place."""
    if (existing["items"], existing["seed"], existing.get("tier", "fast")) != (fresh["items"], fresh["seed"], fresh["tier"]):
        raise ValueError("--update needs the same held-out split (--items, --tier) as the existing results")
    existing.setdefault("updates", []).extend([fresh["command"], *fresh.get("updates", [])])
    for path, rows in fresh["models"].items():
        old = existing["models"].setdefault(path, [])
        index = {(r["method"], r["retain"]): i for i, r in enumerate(old)}
        for row in rows:
            key = (row["method"], row["retain"])
            if key in index:
                old[index[key]] = row
            else:
                old.append(row)
    return existing


def markdown(results: dict) -> str:
    types = list(QUESTION_TYPES)
    tier = TIERS[results.get("tier", "fast")]
    produced = (f"Produced by `{results['command']}`" if "command" in results else "Produced by `python eval/synth_accuracy.py`")
    produced += "".join(f"; rows updated by `{command}`" for command in results.get("updates", [])) + "."
    lines = [
        "# Synthetic video-QA accuracy under compression",
        "",
        f"Held-out split: {results['items']} items from dataset seed {results['seed']} (never used for training), "
        f"tier {tier.name}: {tier.num_frames} frames at {tier.size} px, {tier.visual_tokens:,} visual tokens per video. "
        + produced,
        chance_line(),
        "",
        "Each cell: accuracy, then (in brackets) the mean share of the question's evidence tokens that survived "
        "compression. A low accuracy with high evidence share means the model is confused by the compressed input; "
        "a low evidence share means the method dropped the information. FLOP ret.: the mean over the language "
        "model's layers of the share of visual tokens each layer processed in the prefill (layer methods keep "
        "every token before their first cut; a cache method acts only while decoding, which these 1-3 token "
        "answers barely reach); '-' for rows measured before the column existed.",
    ]
    for path, rows in results["models"].items():
        lines += ["", f"## {path}", "", "| method | retain | tokens kept | FLOP ret. | overall | " + " | ".join(types) + " |",
                  "|---|---|---|---|---|" + "---|" * len(types)]
        for r in rows:
            if "refused" in r:
                lines.append(f"| {r['method']} | {r['retain']} | refused: {r['refused']} |" + " |" * (len(types) + 2))
                continue
            cells = accuracy_evidence_cells(r)
            flop = f"{r['flop_retention']:.3f}" if "flop_retention" in r else "-"
            lines.append(f"| {r['method']} | {r['retain']} | {r['tokens_kept']:.1f} / {r['tokens_in']:.0f} | {flop} | "
                         f"{r['overall']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, default=[Path("vtc/assets/reference-model")])
    parser.add_argument("--tier", choices=list(TIERS), default="fast", help="benchmark tier (default fast)")
    parser.add_argument("--data", type=Path, help="held-out split directory (default .cache/synth/heldout-accuracy, "
                                                   "with -TIER appended for tiers other than fast)")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--retains", nargs="+", type=float, default=RETAINS)
    parser.add_argument("--paper-methods", nargs="*", default=[],
                        help="methods also run once at their paper defaults, without a budget (retain 'paper')")
    parser.add_argument("--out", type=Path, help="results path without suffix (default eval/results/synth_accuracy, "
                                                  "with _TIER appended for tiers other than fast)")
    parser.add_argument("--update", action="store_true", help="replace only the recomputed rows of the existing results")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="run nothing: merge these runs' results (same split, e.g. one model each, run in "
                             "parallel with their own --out) into --out, as --update would")
    args = parser.parse_args()
    suffix = "" if args.tier == "fast" else args.tier
    data = args.data or Path(".cache/synth/heldout-accuracy" + (f"-{suffix}" if suffix else ""))
    args.out = args.out or Path("eval/results/synth_accuracy" + (f"_{suffix}" if suffix else ""))
    command = shlex.join(["python", "eval/synth_accuracy.py", *sys.argv[1:]])

    def write(results: dict) -> str:
        table = markdown(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        args.out.with_suffix(".md").write_text(table)
        return table

    if args.merge:
        results = json.loads(args.out.with_suffix(".json").read_text())
        for path in args.merge:
            results = merge(results, json.loads(path.read_text()))
        write(results)
        return
    existing = json.loads(args.out.with_suffix(".json").read_text()) if args.update else None

    def save(results: dict) -> str:
        results = {**results, "command": command}
        return write(results if existing is None else merge(copy.deepcopy(existing), results))

    print(save(run(args.models, data, args.items, args.methods, args.retains, args.paper_methods, TIERS[args.tier],
                   on_row=save)))


if __name__ == "__main__":
    main()
