"""Trained compressors vs the uncompressed reference model vs every training-free method, at 10% and 5%.

Each number comes from one ``vtc synth eval`` run on the held-out split (dataset seed 999999, as
eval/synth_accuracy.py), whose JSON is kept under eval/results/trained/; runs whose JSON exists are
not repeated. Writes the tables of eval/results/trained.md and keeps its hand-written notes (everything
from ``NOTES_MARKER`` on). Run from the repository root:

    vtc synth make --seed 999999 --count 240 --out .cache/synth/heldout-240
    python eval/trained_accuracy.py --data .cache/synth/heldout-240

With ``--from-summary`` a trained adapter's row is the held-out evaluation ``vtc train`` ran at its end
(the same ``evaluate`` on the same items and budget). The adapters are trained beforehand with ``vtc train`` (the exact commands are in each adapter's
vtc_compressor.json under "training" and in the table).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import vtc
from vtc.synth import QUESTION_TYPES

RETAINS = (0.1, 0.05)
TRAINED = ("scorer", "resampler", "vq")
ADAPTERS = Path("eval/results/adapters")
# Everything from this line on in the output is written by hand (how the adapters were trained, reading) and kept.
NOTES_MARKER = "<!-- notes: written by hand, kept when the tables above are regenerated -->"


def run_eval(data: Path, out: Path, method: str | None, retain: float | None, items: int) -> dict:
    """One ``vtc synth eval`` (skipped when its JSON exists); a method that refuses this model or budget
    (e.g. more stages than the model has layers) gives ``{"refused": its message}``, also kept on disk."""
    if not out.is_file():
        command = ["vtc", "synth", "eval", str(data), "--json", str(out), "--limit", str(items)]
        if method is not None:
            command += ["--method", method] + (["--retain", str(retain)] if retain is not None else [])
        print(" ".join(command), flush=True)
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            if method is None or not message.startswith("vtc: error:"):  # uncompressed cannot refuse: a bad split or a crash
                sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
            out.write_text(json.dumps({"refused": message.removeprefix("vtc: error:").strip()}, indent=2))
    return json.loads(out.read_text())


def free_methods() -> list[str]:
    """Every registered method that removes visual tokens before or inside the prefill. Cache-stage methods
    (``dycoke-kv``) act only while decoding and keep every prefill token, so they have no row here."""
    return [m for m in vtc.list_methods() if vtc.get_method(m).stage != "cache"]


def collect(data: Path, results: Path, items: int, from_summary: bool) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    table = {"none": run_eval(data, results / "none.json", None, None, items), "free": {}, "trained": {}}
    free = free_methods()
    for retain in RETAINS:
        table["free"][retain] = {m: run_eval(data, results / f"{m}-{retain}.json", m, retain, items) for m in free}
        table["trained"][retain] = {}
        for kind in TRAINED:
            for adapter in sorted((ADAPTERS / kind).glob(f"retain-{retain}*")):
                if not (adapter / "vtc_compressor.json").is_file() or adapter.name.split("-")[1] != str(retain):
                    continue
                record = json.loads((adapter / "vtc_compressor.json").read_text())
                held_out = record.get("summary", {}).get("held_out")
                if from_summary and held_out is not None and held_out["n"] == items:
                    result = held_out
                else:
                    result = run_eval(data, results / f"trained-{kind}-{adapter.name}.json", f"trained:{adapter}",
                                      retain, items)
                table["trained"][retain][f"{kind}/{adapter.name}"] = {
                    "result": result, "training": record["training"], "summary": record.get("summary", {})}
    return table


def row(name: str, result: dict, extra: str = "") -> str:
    cells = " | ".join(f"{result['by_type'].get(t, float('nan')):.2f}" for t in QUESTION_TYPES)
    return f"| {name} | {result['tokens_kept']:.1f} | **{result['overall']:.3f}** | {cells} | {extra} |"


def markdown(table: dict, model_commit: str, data: Path, from_summary: bool) -> str:
    none = table["none"]
    lines = [
        "# Trained compressors (LoRA through PEFT) vs training-free methods",
        "",
        f"Held-out split: the first {none['n']} items of dataset seed 999999 (`{data}`; never used for training), "
        "16 frames at 112 px, 128 visual tokens per video. Reference model: `vtc/assets/reference-model` "
        f"at commit {model_commit}. Training-free rows (every registered method at its defaults, except cache-stage "
        "methods, which act only while decoding) and the uncompressed model: one `vtc synth eval` each (JSONs in "
        "`eval/results/trained/`). Trained rows: " + (
            "the held-out evaluation `vtc train` ran at the end of training (same `evaluate`, items and budget; "
            "`vtc synth eval --method trained:DIR` reproduces it exactly, see below). "
            if from_summary else "one `vtc synth eval --method trained:DIR` each. ") +
        "Produced by `python eval/trained_accuracy.py" + (" --from-summary`." if from_summary else "`."),
        "",
        f"Uncompressed reference model: **{none['overall']:.3f}**.",
    ]
    header = ["| method | tokens kept | overall | " + " | ".join(QUESTION_TYPES) + " | training |",
              "|---|---|---|" + "---|" * len(QUESTION_TYPES) + "---|"]
    for retain in RETAINS:
        refused = {m: r["refused"] for m, r in table["free"][retain].items() if "refused" in r}
        free = {m: r for m, r in table["free"][retain].items() if m not in refused}
        best = max(free, key=lambda m: free[m]["overall"])
        lines += ["", f"## {retain:.0%} of visual tokens", "", *header, row("none (uncompressed)", none)]
        for kind, entry in table["trained"][retain].items():
            t, s = entry["training"], entry["summary"]
            info = (f"{s.get('steps', t['steps'])} steps x {t['batch_size']}, {s.get('train_seconds', float('nan')) / 60:.1f} min, "
                    f"lr {t['lr']:g} / LoRA {t['lora_lr']:g} r{t['lora_rank']} {t.get('schedule', 'constant')}"
                    f"{', evidence loss' if t['method'] == 'scorer' and t['evidence_weight'] > 0 else ''}"
                    f"{', note' if t['method'] == 'scorer' and t.get('annotate') else ''}")
            lines.append(row(f"trained:{kind}", entry["result"], info))
        for method in sorted(free, key=lambda m: -free[m]["overall"]):
            lines.append(row(method + (" (best training-free)" if method == best else ""), free[method]))
        if refused:
            lines += ["", "Refused at their defaults on this model: "
                      + "; ".join(f"`{m}` ({message})" for m, message in sorted(refused.items())) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".cache/synth/heldout-240"))
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--results", type=Path, default=Path("eval/results/trained"))
    parser.add_argument("--out", type=Path, default=Path("eval/results/trained.md"))
    parser.add_argument("--from-summary", action="store_true",
                        help="take a trained adapter's accuracy from the held-out eval `vtc train` ran at its end "
                             "(same items, budget and evaluate function) instead of a new `vtc synth eval`")
    args = parser.parse_args()
    commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "vtc/assets/reference-model"],
                            capture_output=True, text=True, check=True).stdout.strip()
    table = collect(args.data, args.results, args.items, args.from_summary)
    previous = args.out.read_text() if args.out.is_file() else ""
    notes = previous[previous.index(NOTES_MARKER):] if NOTES_MARKER in previous else NOTES_MARKER + "\n"
    args.out.write_text(markdown(table, commit, args.data, args.from_summary) + "\n" + notes)
    print(args.out.read_text())


if __name__ == "__main__":
    sys.exit(main())
