"""The fast tier (128 visual tokens) and the scale tier (1,024) side by side: one row per method and
budget, overall accuracy and tokens kept at each, from two ``eval/synth_accuracy.py`` result files.

    python eval/synth_tiers.py eval/results/synth_accuracy_fast_cut.json eval/results/synth_accuracy_scale.json \
        --out eval/results/synth_tiers

A method ranks differently at 1,024 tokens than at 128 when its design assumes many tokens per frame
(issue 19); this table shows where. Rows missing from one file are marked '-'.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from vtc.synth import TIERS


def rows_by_key(results: dict, model: str) -> dict[tuple[str, object], dict]:
    return {(r["method"], r["retain"]): r for r in results["models"][model]}


def cell(row: dict | None) -> str:
    if row is None:
        return "- | -"
    if "refused" in row:
        return "refused | -"
    return f"{row['overall']:.3f} | {row['tokens_kept']:.0f} / {row['tokens_in']:.0f}"


def markdown(fast: dict, scale: dict, model: str, command: str) -> str:
    fast_rows, scale_rows = rows_by_key(fast, model), rows_by_key(scale, model)
    keys = list(dict.fromkeys([*scale_rows, *fast_rows]))
    lines = [
        "# Synthetic video-QA accuracy at both tiers", "",
        f"Model `{model}`. Fast tier: {fast['items']} items, {TIERS['fast'].description}; scale tier: "
        f"{scale['items']} items, {TIERS['scale'].description}; both held-out (dataset seed "
        f"{scale['seed']}). Produced by `{command}` from `{fast.get('command', 'eval/synth_accuracy.py')}` and "
        f"`{scale.get('command', 'eval/synth_accuracy.py --tier scale')}`. Per-type accuracy and evidence kept are in "
        "the two source tables.", "",
        "| method | retain | fast: overall | fast: tokens kept | scale: overall | scale: tokens kept | scale - fast |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        f, s = fast_rows.get(key), scale_rows.get(key)
        both = f is not None and s is not None and "refused" not in f and "refused" not in s
        delta = f"{s['overall'] - f['overall']:+.3f}" if both else "-"
        lines.append(f"| {key[0]} | {key[1]} | {cell(f)} | {cell(s)} | {delta} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fast", type=Path, help="synth_accuracy JSON of the fast tier")
    parser.add_argument("scale", type=Path, help="synth_accuracy JSON of the scale tier")
    parser.add_argument("--model", help="model key present in both files (default: the scale file's first)")
    parser.add_argument("--out", type=Path, default=Path("eval/results/synth_tiers"))
    args = parser.parse_args()
    fast, scale = (json.loads(p.read_text()) for p in (args.fast, args.scale))
    if (fast.get("tier", "fast"), scale.get("tier", "fast")) != ("fast", "scale"):
        raise SystemExit(f"expected a fast-tier then a scale-tier result, got {fast.get('tier', 'fast')} and "
                         f"{scale.get('tier', 'fast')}")
    model = args.model or next(iter(scale["models"]))
    command = shlex.join(["python", "eval/synth_tiers.py", *sys.argv[1:]])
    text = markdown(fast, scale, model, command)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
