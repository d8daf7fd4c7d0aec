"""``vtc bench SUITE.yaml``: the sweep from the shell."""
from __future__ import annotations

import argparse


def register_cli(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench", help="sweep methods x budgets through lmms-eval: results JSON, markdown table, plot",
        description="Run every cell of a suite file (baseline first) through lmms-eval on one loaded model. "
                    "Finished cells are kept in OUTPUT.json and skipped when the command is run again.",
    )
    bench.add_argument("suite", help="suite YAML (model, model_args, tasks, include_path, methods, budgets, output)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .run import run_suite
    from .suite import load_suite

    suite = load_suite(args.suite)
    run_suite(suite, progress=not args.quiet)
    for suffix in (".json", ".md", ".png"):
        print(f"wrote {suite.output.with_suffix(suffix)}")
    return 0
