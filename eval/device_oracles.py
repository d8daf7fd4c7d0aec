"""The correctness oracles on an accelerator: every tiny test family, float32 and bfloat16, sdpa.

CI has no GPU, so a session lent one runs this (eval/device_check.sh) and commits what it wrote. The
oracles are the test suite's (tests/test_oracles.py), run on the device:

- ``retain-1``: at retain 1.0 the prefill logits, the greedy tokens and every decode step's logits are
  bit-identical to the unwrapped model, and unwrap restores it (exact in every dtype);
- ``masked``: pruning before the LLM equals the full sequence with the dropped tokens masked out of
  attention, positions preserved;
- ``batch``: a left-padded batch keeps, per sample, the tokens its sample keeps alone, and generates
  what the sample generates alone.

In float32 (TF32 off) ``masked`` and ``batch`` use the CPU suite's tolerances. In bfloat16 two
computations of different shapes (a shorter sequence; padding) round differently, so there they are
judged against bfloat16's rounding: ``masked`` passes when the pruned logits are no further from a float32
run of the masked sequence than ``SLACK`` times the bfloat16 masked run is (plus ``ABS``); ``batch``
passes when the kept indices are equal and the first-token logits differ by at most ``ULPS`` units in the
last place of bfloat16 at the largest logit. The greedy tokens are reported: a bfloat16 near-tie may flip
one, which the report shows rather than hides.

Command line: ``python -m eval.device_oracles --families qwen2_5_vl --out DIR`` writes DIR/<family>.json;
``python -m eval.device_oracles --merge DIR --out eval/results/device_oracles_h200`` writes the .md/.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

import vtc

SLACK, ABS = 2.0, 1e-3
ULPS = 4
FLOAT32_TOLERANCE = {"masked": 1e-5, "batch": 1e-4}  # tests/test_oracles.py's


def on_device(inputs: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """The processor's tensors on ``device``, floating ones (pixels) in the model's dtype."""
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
            for k, v in inputs.items()}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def retain_one(model, inputs: dict, spec: str) -> dict:
    from tests.test_oracles import retain_one_checks

    checks = retain_one_checks(model, inputs, spec)
    return {**checks, "passed": all(checks.values())}


def masked(tm, model, reference_model, cpu_inputs: dict, inputs: dict, fp32_inputs: dict, spec: str,
           dtype: torch.dtype) -> dict:
    from tests.test_oracles import dropped_masked, rope_positions

    with vtc.compressed(model, spec), torch.no_grad():
        pruned = model(**inputs).logits[:, -1]
        stats = model.vtc_stats
    if sum(stats.tokens_kept) >= sum(stats.visual_tokens):
        return dict(passed=False, why="nothing was dropped: the oracle needs a cut")
    mask = dropped_masked(tm, cpu_inputs, stats.kept_indices).to(inputs["input_ids"].device)

    def masked_logits(m, x: dict) -> torch.Tensor:
        with torch.no_grad():
            return m(**{**x, "attention_mask": mask, "position_ids": rope_positions(m, x)}).logits[:, -1]

    same_dtype = masked_logits(model, inputs)
    error = max_diff(pruned, same_dtype)
    if dtype == torch.float32:
        return dict(max_abs=error, tolerance=FLOAT32_TOLERANCE["masked"], kept=stats.tokens_kept,
                    passed=bool(torch.allclose(pruned, same_dtype, rtol=1e-5, atol=FLOAT32_TOLERANCE["masked"])))
    truth = masked_logits(reference_model, fp32_inputs)
    pruned_error, floor = max_diff(pruned, truth), max_diff(same_dtype, truth)
    return dict(max_abs=error, pruned_vs_fp32=pruned_error, masked_vs_fp32=floor, kept=stats.tokens_kept,
                passed=pruned_error <= SLACK * floor + ABS)


def bf16_ulps(logits: torch.Tensor, count: int) -> float:
    """``count`` units in the last place of bfloat16 (8 significant bits) at the largest |logit|."""
    largest = logits.float().abs().max().item()
    return count * 2.0 ** (torch.tensor(largest).log2().floor().item() - 7) if largest > 0 else 0.0


def batch(tm, model, device: torch.device, dtype: torch.dtype, spec: str) -> dict:
    from tests.test_oracles import greedy

    clips = tm.batch_clips()
    with vtc.compressed(model, spec):
        batched = greedy(model, on_device(tm.inputs(clips), device, dtype))
        kept_batch = model.vtc_stats.kept_indices
        singles, kept_single = [], []
        for clip in clips:
            singles.append(greedy(model, on_device(tm.inputs([clip]), device, dtype)))
            kept_single.append(model.vtc_stats.kept_indices[0])
    steps = len(batched.logits)
    tokens_equal = all(torch.equal(batched.sequences[b, -steps:], s.sequences[0, -steps:]) for b, s in enumerate(singles))
    first = max(max_diff(batched.logits[0][b], s.logits[0][0]) for b, s in enumerate(singles))
    every = max(max_diff(g[b], w[0]) for b, s in enumerate(singles) for g, w in zip(batched.logits, s.logits))
    kept_equal = [list(a) for a in kept_batch] == [list(a) for a in kept_single]
    tolerance = FLOAT32_TOLERANCE["batch"] if dtype == torch.float32 else bf16_ulps(singles[0].logits[0], ULPS)
    passed = kept_equal and first <= tolerance and (tokens_equal or dtype != torch.float32)
    if dtype == torch.float32:
        passed = passed and every <= tolerance
    return dict(kept_equal=kept_equal, tokens_equal=tokens_equal, first_token_max_abs=first, every_step_max_abs=every,
                tolerance=tolerance, passed=passed)


def guarded(rows: list[dict], base: dict, run: Callable[[], dict]) -> None:
    """Run one check; an exception is a failed row with its traceback, and the next check still runs."""
    start = time.perf_counter()
    try:
        row = {**base, **run()}
    except Exception:  # noqa: BLE001 - the report must show every failure, not stop at the first
        row = {**base, "passed": False, "error": traceback.format_exc(limit=6)}
    row["seconds"] = round(time.perf_counter() - start, 2)
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
    if "error" in row:
        print(row["error"], flush=True)


def run_family(family: str, device: torch.device, dtypes: list[torch.dtype], first: int | None = None) -> list[dict]:
    """Every oracle of ``family`` in each dtype; ``first`` keeps only that many specs per oracle (a quick run)."""
    from tests.builders import fresh, unsupported_stages
    from tests.test_oracles import BATCH_SPECS, PRUNING_SPECS, RETAIN_ONE_SPECS

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows: list[dict] = []
    tm = fresh(family)
    tm.model.set_attn_implementation("sdpa")
    reference_model = copy.deepcopy(tm.model).to(device, torch.float32)
    for dtype in dtypes:
        model = copy.deepcopy(tm.model).to(device, dtype)
        tm.model, host_model = model, tm.model  # tm.visual_token_id reads the adapter of tm.model
        cpu_inputs = tm.inputs(tm.batch_clips())
        inputs, fp32_inputs = on_device(cpu_inputs, device, dtype), on_device(cpu_inputs, device, torch.float32)
        name = str(dtype).removeprefix("torch.")
        for spec in RETAIN_ONE_SPECS[:first]:
            if not unsupported_stages(family, spec):
                guarded(rows, dict(family=family, dtype=name, oracle="retain-1", spec=spec),
                        lambda: retain_one(model, inputs, spec))
        for spec in PRUNING_SPECS[:first]:
            guarded(rows, dict(family=family, dtype=name, oracle="masked", spec=spec),
                    lambda: masked(tm, model, reference_model, cpu_inputs, inputs, fp32_inputs, spec, dtype))
        for spec in BATCH_SPECS[:first]:
            if not unsupported_stages(family, spec):
                guarded(rows, dict(family=family, dtype=name, oracle="batch", spec=spec),
                        lambda: batch(tm, model, device, dtype, spec))
        tm.model = host_model
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Correctness oracles on {meta.get('device_name', meta['device'])}", "",
             f"Command: `{meta['command']}`", "",
             f"torch {meta['torch']}, transformers {meta['transformers']}, attention sdpa, TF32 off. "
             f"Every tiny test family (tests/families/), the oracle specs of tests/test_oracles.py. bfloat16 "
             f"rule: pruned-vs-float32 error <= {SLACK} x the bfloat16 masked run's own error + {ABS} (masked); "
             f"equal kept indices and first-token logits within {ULPS} bfloat16 ulps at the largest logit (batch). "
             f"See eval/device_oracles.py.", "",
             "| family | dtype | retain-1 (exact) | masked | batch | batch greedy tokens equal | max masked error | "
             "max batch error (first token) | failures |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["family"], r["dtype"]) for r in rows})
    for family, dtype in keys:
        mine = [r for r in rows if (r["family"], r["dtype"]) == (family, dtype)]

        def tally(oracle: str) -> str:
            these = [r for r in mine if r["oracle"] == oracle]
            return f"{sum(r['passed'] for r in these)}/{len(these)}"

        batches = [r for r in mine if r["oracle"] == "batch" and "tokens_equal" in r]
        masks = [r.get("pruned_vs_fp32", r.get("max_abs", 0.0)) for r in mine if r["oracle"] == "masked" and "max_abs" in r]
        firsts = [r["first_token_max_abs"] for r in batches]
        failed = [f"{r['oracle']} {r['spec']}" + (" (error)" if "error" in r else "") for r in mine if not r["passed"]]
        lines.append(f"| {family} | {dtype} | {tally('retain-1')} | {tally('masked')} | {tally('batch')} | "
                     f"{sum(r['tokens_equal'] for r in batches)}/{len(batches)} | "
                     f"{max(masks, default=float('nan')):.2e} | {max(firsts, default=float('nan')):.2e} | "
                     f"{'; '.join(failed) or '-'} |")
    total = len(rows)
    lines += ["", f"**{sum(r['passed'] for r in rows)} of {total} checks passed.** Per-check numbers (and the "
              "traceback of any error) are in the JSON beside this file."]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.device_oracles", description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="*", default=None, help="default: every tiny test family")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--first", type=int, default=None, help="only the first N specs of each oracle (a quick run)")
    p.add_argument("--merge", type=Path, default=None, help="merge the per-family JSON files of this folder")
    p.add_argument("--command", default=None, help="the command to print in the merged report")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import transformers

    args = parse(argv)
    device = torch.device(args.device)
    meta = dict(device=args.device, torch=torch.__version__, transformers=transformers.__version__,
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    if args.merge is not None:
        rows = [row for path in sorted(args.merge.glob("*.json")) for row in json.loads(path.read_text())["rows"]]
        meta["command"] = args.command or "eval/device_check.sh"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        args.out.with_suffix(".md").write_text(markdown(rows, meta))
        print(args.out.with_suffix(".md").read_text())
        return
    from tests.builders import FAMILIES

    dtypes = [getattr(torch, d) for d in args.dtypes]
    args.out.mkdir(parents=True, exist_ok=True)
    for family in args.families or FAMILIES:
        rows = run_family(family, device, dtypes, args.first)
        (args.out / f"{family}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
