"""Accuracy of the frame selectors in front of the processor (``vtc.VideoProcessor``), where they may trade resolution.

Inside ``vtc.wrap`` the frames are already encoded, so a selector can only keep or drop whole frame groups at
full resolution, and F2C (``keyclips``) degenerates to one or two contiguous clips. In front of the processor
the Qwen line resizes frames, so F2C's own trade (more, longer clips at a lower resolution) is available.
This script measures every selector that way on a synthetic held-out split (default: the scale tier), beside
the path's own uncompressed row (``uniform-frames`` at retain 1.0: every frame at full resolution).

    python eval/select_processor_accuracy.py --model eval/checkpoints/reference-tiers2 \
        --data .cache/synth/heldout-seed999999-n240-scale --items 120

Writes eval/results/select_processor_scale.{md,json}. Evidence: the share of the question's evidence boxes
whose frame was selected (at whatever resolution the plan chose).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import vtc
from vtc.runner import generate_answers, load_model
from vtc.synth import QUESTION_TYPES
from vtc.synth.dataset import load_dataset
from vtc.synth.model import FPS, parse_answer, question_text
from vtc.synth.table import accuracy_evidence_cells, chance_line

METHODS = ["uniform-frames", "fps", "keyframes", "keyclips", "keyclips(relevance=novelty)", "query", "scenes"]
RETAINS = [0.5, 0.25, 0.1, 0.05]


def evaluate(model: Any, processor: Any, data: Path, items: list[dict], method: str, retain: float,
             batch_size: int) -> dict[str, Any]:
    """One (method, retain) row: accuracy and evidence by type, visual tokens, the scales the plans chose."""
    selecting = vtc.VideoProcessor(processor, method, retain=retain, model=model, candidate_fps=FPS)
    records, notes = [], set()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        inputs = selecting([str(data / it["video"]) for it in chunk], [question_text(it) for it in chunk])
        replies = generate_answers(model, processor, inputs, max_new_tokens=3)
        record = inputs.vtc_selection
        notes.update(record.notes)
        for b, (item, reply) in enumerate(zip(chunk, replies)):
            chosen = set(record.selected_frames[b])
            evidence = [box[0] in chosen for box in item["evidence"]]
            records.append({"type": item["type"], "correct": parse_answer(reply, item["options"]) == item["answer"],
                            "tokens": record.visual_tokens[b], "budget": record.budget_tokens[b],
                            "scale": record.scale[b], "evidence": float(np.mean(evidence)) if evidence else 1.0})
    by_type = {t: [r for r in records if r["type"] == t] for t in QUESTION_TYPES}
    return {
        "method": method, "retain": retain, "n": len(records),
        "overall": float(np.mean([r["correct"] for r in records])),
        "by_type": {t: float(np.mean([r["correct"] for r in rs])) for t, rs in by_type.items() if rs},
        "evidence_kept": {t: float(np.mean([r["evidence"] for r in rs])) for t, rs in by_type.items() if rs},
        "tokens_kept": float(np.mean([r["tokens"] for r in records])),
        "budget": float(np.mean([r["budget"] for r in records])),
        "scales": sorted({r["scale"] for r in records}, reverse=True),
        "notes": sorted({note_pattern(n) for n in notes}),
    }


def note_pattern(note: str) -> str:
    """A note with its numbers replaced by N, so one kind of note is listed once."""
    return re.sub(r"\d+(?:\.\d+)?", "N", note)


def markdown(results: dict) -> str:
    types = list(QUESTION_TYPES)
    lines = [
        "# Frame selectors in front of the processor (resolution trade allowed)",
        "",
        f"Model `{results['model']}`; {results['items']} items of `{results['data']}`; candidates: every frame "
        f"({FPS:g} fps). Produced by `{results['command']}`.",
        chance_line(),
        "",
        "Each cell: accuracy, then (in brackets) the share of the question's evidence boxes whose frame was selected. "
        "tokens: visual tokens the processor produced / the budget. scales: the frame scales the plans chose "
        "(1.0 = the tier's full resolution).",
        "",
        "| method | retain | tokens / budget | scales | overall | " + " | ".join(types) + " |",
        "|---|---|---|---|---|" + "---|" * len(types),
    ]
    for r in results["rows"]:
        cells = accuracy_evidence_cells(r)
        scales = ", ".join(f"{s:g}" for s in r["scales"])
        lines.append(f"| {r['method']} | {r['retain']} | {r['tokens_kept']:.1f} / {r['budget']:.0f} | {scales} | "
                     f"{r['overall']:.3f} | " + " | ".join(cells) + " |")
    notes = sorted({note_pattern(n) for r in results["rows"] for n in r["notes"]})
    if notes:
        lines += ["", "Notes the selectors gave (numbers replaced by N):", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("eval/checkpoints/reference-tiers2"))
    parser.add_argument("--data", type=Path, default=Path(".cache/synth/heldout-seed999999-n240-scale"),
                        help="a `vtc synth make` directory (default: the trainer's 240-item scale-tier held-out split)")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--retains", nargs="+", type=float, default=RETAINS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("eval/results/select_processor_scale"))
    args = parser.parse_args()
    if not (args.data / "data.jsonl").is_file():
        raise SystemExit(f"{args.data} is not a `vtc synth make` directory; render it first "
                         "(e.g. vtc synth make --seed 999999 --count 240 --tier scale --out DIR)")
    torch.manual_seed(0)
    model, processor = load_model(args.model, device="cpu")
    items = load_dataset(args.data)[: args.items]
    results = {"model": str(args.model), "data": str(args.data), "items": len(items), "rows": [],
               "command": shlex.join(["python", "eval/select_processor_accuracy.py", *sys.argv[1:]])}
    runs = [("uniform-frames", 1.0)] + [(m, r) for m in args.methods for r in args.retains]
    for method, retain in tqdm(runs, desc="select rows"):
        results["rows"].append(evaluate(model, processor, args.data, items, method, retain, args.batch_size))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        args.out.with_suffix(".md").write_text(markdown(results))
        tqdm.write(f"{method}@{retain}: {results['rows'][-1]['overall']:.3f}")


if __name__ == "__main__":
    main()
