"""Run a suite's cells through lmms-eval on one loaded model: baseline first, resumable.

Every cell calls ``lmms_eval.evaluator.simple_evaluate`` with the same model object, re-wrapped
with the cell's compression, so baseline and methods share the harness, prompts, frames and docs.
Finished cells are written to the results JSON at once and skipped on the next run; a results file
made by a different suite (other model, weights, arguments, tasks or limit) is refused rather than mixed in.
"""
from __future__ import annotations

import difflib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .plot import plot
from .report import markdown
from .suite import Cell, Suite

STDERR_BOOTSTRAP_ITERS = 1000


def run_suite(suite: Suite, progress: bool = True) -> dict[str, Any]:
    """Evaluate every cell not yet in ``suite.output``.json, then write the .json, .md and .png."""
    _make_synth_data(suite)
    task_manager = _task_manager(suite)
    results = _existing_results(suite)
    done = {cell["name"] for cell in results["cells"]}
    todo = [cell for cell in suite.cells() if cell.name not in done]
    if todo:
        _check_documents(suite, task_manager)
        lm = _load_model(suite)
        results.setdefault("device", str(lm.device))
        bar = tqdm(todo, desc="vtc bench", unit="cell", disable=not progress)
        for cell in bar:
            bar.set_postfix_str(cell.name)
            record = evaluate_cell(lm, cell, suite, task_manager)
            if record is None:  # not the main process under accelerate launch
                continue
            results["cells"].append(record)
            _write_json(results, suite.output.with_suffix(".json"))
        if not _is_main_process():
            return results
    results["note"] = suite.note
    order = {cell.name: i for i, cell in enumerate(suite.cells())}
    results["cells"].sort(key=lambda c: order.get(c["name"], len(order)))
    _write_json(results, suite.output.with_suffix(".json"))
    suite.output.with_suffix(".md").write_text(markdown(results))
    plot(results, suite.output.with_suffix(".png"))
    return results


def evaluate_cell(lm: Any, cell: Cell, suite: Suite, task_manager: Any) -> dict[str, Any] | None:
    """One lmms-eval run of every task with the cell's compression; None on non-main processes."""
    from lmms_eval.evaluator import simple_evaluate

    lm.set_compression(cell.method, retain=cell.retain, tokens=cell.tokens)
    lm.vtc_records.clear()
    start = time.perf_counter()
    out = simple_evaluate(
        model=lm, tasks=list(suite.tasks), task_manager=task_manager, limit=suite.limit,
        batch_size=suite.batch_size, log_samples=False, bootstrap_iters=STDERR_BOOTSTRAP_ITERS, verbosity="WARNING",
    )
    records = _gather(lm.vtc_records)
    if not _is_main_process():
        return None
    if out is None or "results" not in out:
        raise RuntimeError(f"lmms-eval returned no results for cell {cell.name}")
    scores = {task: _score(out, task, suite.metric.get(task)) for task in suite.tasks}
    evaluated = sum(score["n"] for score in scores.values())
    if len(records) != evaluated:
        raise RuntimeError(
            f"cell {cell.name}: lmms-eval evaluated {evaluated} documents but the model recorded {len(records)} "
            "prefills; a task may bypass generate_until or be cached"
        )
    visual = sum(r.visual_tokens for r in records)
    stage_names = sorted({name for r in records for name in r.stage_ms})
    return {
        "name": cell.name, "method": cell.method, "budget": cell.budget, "retain": cell.retain, "tokens": cell.tokens,
        "scores": scores,
        "samples": len(records),
        "visual_tokens": visual / len(records),
        "tokens_kept": sum(r.tokens_kept for r in records) / len(records),
        "tokens_entering_llm": sum(r.tokens_entering_llm for r in records) / len(records),
        "retention": sum(r.tokens_kept for r in records) / visual if visual else 1.0,
        "flop_retention": statistics.fmean(r.flop_retention for r in records),
        "prefill_ms": statistics.median(r.prefill_ms for r in records),
        "stage_ms": {name: statistics.fmean(r.stage_ms.get(name, 0.0) for r in records) for name in stage_names},
        "seconds": time.perf_counter() - start,
    }


def _score(out: dict[str, Any], task: str, metric: str | None) -> dict[str, Any]:
    table = out["results"].get(task) or out.get("groups", {}).get(task)
    if table is None:
        raise RuntimeError(f"lmms-eval wrote no results for task {task!r}")
    metric = metric or out["configs"][task]["metric_list"][0]["metric"]
    key = f"{metric},none"
    if key not in table:
        names = sorted({k.split(",")[0] for k in table if "," in k and "_stderr" not in k})
        raise ValueError(f"task {task!r} reports no metric {metric!r}; it reports {', '.join(names)}")
    stderr = table.get(f"{metric}_stderr,none")
    return {
        "metric": metric, "value": float(table[key]),
        "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
        "n": int(out["n-samples"][task]["effective"]),
    }


def _load_model(suite: Suite) -> Any:
    from lmms_eval.models import get_model

    lm = get_model(suite.model)(**suite.model_args, batch_size=suite.batch_size)
    lm.keep_loaded = True
    return lm


def _task_manager(suite: Suite) -> Any:
    """Index as little as finds every task: the suite's task directories, then vtc's own tasks (installed
    with the package, so a wheel user needs no checkout), then lmms-eval's built-ins (indexing those takes
    seconds)."""
    from lmms_eval.tasks import TaskManager

    from ..tasks import TASKS_DIR

    paths = [str(p) for p in suite.include_path]
    manager = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=False) if paths else None
    if manager is None or set(suite.tasks) - set(manager.all_tasks):
        if all(Path(p).resolve() != TASKS_DIR for p in paths):
            paths.append(str(TASKS_DIR))
        manager = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=False)
    if set(suite.tasks) - set(manager.all_tasks):
        manager = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=True)
    for task in suite.tasks:
        if task not in manager.all_tasks:
            close = difflib.get_close_matches(task, manager.all_tasks, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{suite.path}: unknown task {task!r}{hint} (include_path: {paths or 'none'})")
    return manager


def _check_documents(suite: Suite, task_manager: Any) -> None:
    """Load every task and resolve each document's visuals before the model loads, so missing data fails fast."""
    from lmms_eval.tasks import get_task_dict

    for task in _leaf_tasks(get_task_dict(list(suite.tasks), task_manager)):
        for index, doc in enumerate(task.eval_docs):
            if suite.limit is not None and index >= suite.limit:
                break
            task.doc_to_visual(doc)


def _leaf_tasks(task_dict: dict) -> list[Any]:
    leaves = []
    for value in task_dict.values():
        if isinstance(value, dict):
            leaves += _leaf_tasks(value)
        elif isinstance(value, tuple):
            leaves += [v for v in value[1:] if v is not None]
        else:
            leaves.append(value)
    return leaves


def _make_synth_data(suite: Suite) -> None:
    spec = suite.synth_data
    if spec is None or (spec["dir"] / "data.jsonl").is_file():
        return
    from ..synth import make_dataset

    if _is_main_process():
        make_dataset(spec["dir"], seed=spec["seed"], count=spec["count"])
    _barrier()


def _existing_results(suite: Suite) -> dict[str, Any]:
    from importlib.metadata import version

    path = suite.output.with_suffix(".json")
    fresh = {
        "suite": _display_path(suite.path), "suite_name": suite.path.stem, "fingerprint": suite.fingerprint(),
        "model": suite.model, "model_args": suite.model_args, "tasks": suite.tasks, "limit": suite.limit,
        "batch_size": suite.batch_size, "lmms_eval_version": version("lmms-eval"), "cells": [],
    }
    if not path.is_file():
        return fresh
    previous = json.loads(path.read_text())
    if previous.get("fingerprint") != fresh["fingerprint"]:
        raise ValueError(
            f"{path} holds results of a different suite (model, its weights, model_args, tasks, metric or limit changed); "
            "delete it or change 'output' to start a new sweep"
        )
    return previous


def _write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _gather(records: list) -> list:
    """Every process's records on every process (one process: the list itself)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(records)
    gathered: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, list(records))
    return [r for part in gathered for r in part]
