"""Turn a sweep's results (see ``run.py``) into a markdown table and plot series.

"Retention" here is measured, not requested: visual tokens that survived every stage over visual
tokens in, averaged over the samples (a layer-stage method counts after its cut). "Speed-up" is the
baseline's median prefill time over the cell's, both measured in the same process on the same docs.
"""
from __future__ import annotations

from typing import Any

from .suite import REFERENCE_DEFAULT_MODELS


def baseline_of(results: dict[str, Any]) -> dict[str, Any]:
    for cell in results["cells"]:
        if cell["method"] is None:
            return cell
    raise ValueError("the results hold no baseline cell")


def percent_of_baseline(cell: dict[str, Any], baseline: dict[str, Any]) -> float | None:
    """Mean over tasks of score / baseline score, in percent (None when a baseline score is 0)."""
    ratios = []
    for task, score in cell["scores"].items():
        reference = baseline["scores"][task]["value"]
        if not reference:
            return None
        ratios.append(100.0 * score["value"] / reference)
    return sum(ratios) / len(ratios)


def speedup(cell: dict[str, Any], baseline: dict[str, Any]) -> float | None:
    return baseline["prefill_ms"] / cell["prefill_ms"] if cell["prefill_ms"] else None


def markdown(results: dict[str, Any]) -> str:
    baseline = baseline_of(results)
    tasks = list(baseline["scores"])
    header = ["cell", "retention", "tokens kept / in"]
    header += [f"{task} {baseline['scores'][task]['metric']}" for task in tasks]
    header += ["% of baseline", "prefill ms", "speed-up"]
    lines = [
        f"# Sweep: {results['suite_name']}",
        "",
        f"Model `{results['model']}` ({_args(results['model'], results['model_args'])}) on {results['device']}, "
        f"tasks {', '.join(tasks)}, {baseline['samples']} samples per cell"
        + (f" (limit {results['limit']})" if results.get("limit") else "") + f", batch size {results['batch_size']}, "
        f"lmms-eval {results['lmms_eval_version']}. Produced by `vtc bench {results['suite']}`.",
        "",
        "Retention: visual tokens that survived every stage / visual tokens in (measured). "
        "Prefill ms: median per sample (vision encoder included; batch time / batch size). "
        "Scores are ± one standard error where lmms-eval reports one.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for cell in results["cells"]:
        share = percent_of_baseline(cell, baseline)
        fast = speedup(cell, baseline)
        row = [cell["name"], f"{cell['retention']:.3f}", f"{cell['tokens_kept']:.1f} / {cell['visual_tokens']:.0f}"]
        row += [_score(cell["scores"][task]) for task in tasks]
        row += ["n/a" if share is None else f"{share:.1f}%", f"{cell['prefill_ms']:.1f}",
                "n/a" if fast is None else f"{fast:.2f}x"]
        lines.append("| " + " | ".join(row) + " |")
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines) + "\n"


def series(results: dict[str, Any]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Plot data: panel -> line label -> (retention, y) points sorted by retention.

    One panel per task (its score) and a "speed-up" panel; one line per method, the baseline a
    single point at its own retention (1.0).
    """
    baseline = baseline_of(results)
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for cell in results["cells"]:
        label = "baseline" if cell["method"] is None else cell["method"]
        for task, score in cell["scores"].items():
            panels.setdefault(task, {}).setdefault(label, []).append((cell["retention"], score["value"]))
        fast = speedup(cell, baseline)
        if fast is not None:
            panels.setdefault("speed-up", {}).setdefault(label, []).append((cell["retention"], fast))
    for lines in panels.values():
        for points in lines.values():
            points.sort()
    return panels


def _score(score: dict[str, Any]) -> str:
    text = f"{score['value']:.3f}"
    return text + (f" ± {score['stderr']:.3f}" if score.get("stderr") is not None else "")


def _args(model: str, model_args: dict[str, Any]) -> str:
    shown = dict(model_args)
    if "pretrained" not in shown and model in REFERENCE_DEFAULT_MODELS:
        shown = {"pretrained": "the shipped reference model (default)", **shown}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"
