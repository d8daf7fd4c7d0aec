"""A bench suite file (YAML): which model, tasks, methods and budgets to sweep, and where results go.

Relative paths in a suite (``include_path``, ``output``, ``synth_data.dir``) are taken relative to the
suite file, so a committed suite runs the same from any working directory.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..budget import Budget
from ..checks import at_least, model_path
from ..pipeline import Pipeline
from .weights import weights_digest

VTC_MODELS = ("vtc", "vtc_qwen2_5_vl", "vtc_qwen3_vl")
REFERENCE_DEFAULT_MODELS = ("vtc", "vtc_qwen2_5_vl")  # their ``pretrained`` defaults to vtc's reference model
KEYS = {
    "model": "lmms-eval model id: vtc (default), vtc_qwen2_5_vl or vtc_qwen3_vl",
    "model_args": "mapping passed to the model (pretrained, num_frames, device, ...)",
    "tasks": "lmms-eval task names",
    "include_path": "task directories (relative to the suite file)",
    "methods": "vtc method names or specs",
    "budgets": "retain fractions (<= 1) or token counts (> 1)",
    "output": "results path without suffix (relative to the suite file); .json, .md and .png are written",
    "limit": "only the first N documents of each task",
    "batch_size": "requests per generate() call (default 1)",
    "metric": "mapping task -> metric to report (default: the task's first metric)",
    "synth_data": "render vtc's synthetic dataset first if missing: {seed, count, dir (default: the installed "
                  "vtc_synth task's data folder)}",
    "note": "text printed under the table (e.g. how the machine was loaded while timing)",
}
SYNTH_KEYS = ("dir", "seed", "count")


@dataclass(frozen=True)
class Cell:
    """One evaluation: the baseline (no method) or one method at one budget."""

    method: str | None
    budget: float | int | None

    @property
    def name(self) -> str:
        return "baseline" if self.method is None else f"{self.method} @ {self.budget:g}"

    @property
    def retain(self) -> float | None:
        return float(self.budget) if self.budget is not None and self.budget <= 1 else None

    @property
    def tokens(self) -> int | None:
        return int(self.budget) if self.budget is not None and self.budget > 1 else None


@dataclass
class Suite:
    path: Path
    tasks: list[str]
    methods: list[str]
    budgets: list[float | int]
    output: Path
    model: str = "vtc"
    model_args: dict[str, Any] = field(default_factory=dict)
    include_path: list[Path] = field(default_factory=list)
    limit: int | None = None
    batch_size: int = 1
    metric: dict[str, str] = field(default_factory=dict)
    synth_data: dict[str, Any] | None = None
    note: str = ""

    def cells(self) -> list[Cell]:
        """Baseline first, then every method at every budget, in suite order."""
        return [Cell(None, None)] + [Cell(m, b) for m in self.methods for b in self.budgets]

    def checkpoint(self) -> Path | None:
        """The local checkpoint the model loads: ``pretrained``, else the reference model where that is the default."""
        pretrained = self.model_args.get("pretrained")
        return model_path(pretrained) if pretrained or self.model in REFERENCE_DEFAULT_MODELS else None

    def fingerprint(self) -> str:
        """What makes two runs comparable: same model, weights, arguments, tasks, metrics and documents."""
        checkpoint = self.checkpoint()
        key = {"model": self.model, "model_args": self.model_args, "tasks": self.tasks, "limit": self.limit,
               "metric": self.metric, "weights": weights_digest(checkpoint) if checkpoint else None}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every mistake is a ValueError that says what to fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    with path.open() as stream:  # a stream, so YAML errors name the file
        try:
            raw = yaml.safe_load(stream) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a suite is a YAML mapping with keys {', '.join(KEYS)}")
    _check_keys(path, raw, KEYS)
    for required in ("tasks", "methods", "budgets", "output"):
        if not raw.get(required):
            raise ValueError(f"{path}: '{required}' is required ({KEYS[required]})")
    base = path.parent
    suite = Suite(
        path=path,
        tasks=_strings(path, raw, "tasks"),
        methods=_strings(path, raw, "methods"),
        budgets=[_budget(path, b) for b in _as_list(raw["budgets"])],
        output=_under(base, raw["output"]),
        model=str(raw.get("model", "vtc")),
        model_args=dict(raw.get("model_args") or {}),
        include_path=[_under(base, p) for p in _as_list(raw.get("include_path") or [])],
        limit=_positive_int(path, raw, "limit"),
        batch_size=_positive_int(path, raw, "batch_size") or 1,
        metric={str(k): str(v) for k, v in (raw.get("metric") or {}).items()},
        synth_data=_synth(path, raw.get("synth_data"), base),
        note=str(raw.get("note") or "").strip(),
    )
    if suite.model not in VTC_MODELS:
        raise ValueError(f"{path}: model {suite.model!r} is not a vtc model; use one of {', '.join(VTC_MODELS)}")
    _check_model_args(path, suite)
    for method in suite.methods:
        try:
            Pipeline.parse(method)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: method {method!r}: {err.args[0]}") from None
    for directory in suite.include_path:
        if not directory.is_dir():
            raise ValueError(f"{path}: include_path {directory} is not a directory")
    unknown_metric_tasks = set(suite.metric) - set(suite.tasks)
    if unknown_metric_tasks:
        raise ValueError(f"{path}: 'metric' names tasks that are not in 'tasks': {sorted(unknown_metric_tasks)}")
    return suite


def _check_keys(path: Path, raw: dict, known: dict | tuple, where: str = "") -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ValueError(f"{path}: unknown key '{where}{key}'{hint}")


def _check_model_args(path: Path, suite: Suite) -> None:
    from ..integrations.lmms_eval import model_arg_names

    known = model_arg_names(suite.model)
    if "batch_size" in suite.model_args:
        raise ValueError(f"{path}: set the batch size with the suite's 'batch_size' key, not in model_args")
    for key in suite.model_args:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; {suite.model} takes {', '.join(sorted(known))}"
            raise ValueError(f"{path}: model_args: {suite.model} takes no argument '{key}'{hint}")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _strings(path: Path, raw: dict, key: str) -> list[str]:
    values = [str(v) for v in _as_list(raw[key])]
    if len(set(values)) != len(values):
        raise ValueError(f"{path}: '{key}' lists the same entry twice: {values}")
    return values


def _budget(path: Path, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: budget {value!r} is not a number (a retain fraction <= 1 or a token count > 1)")
    try:
        Budget(retain=float(value)) if value <= 1 else Budget(tokens=int(value))
    except ValueError as err:
        raise ValueError(f"{path}: budget {value!r}: {err}") from None
    if value > 1 and value != int(value):
        raise ValueError(f"{path}: budget {value!r}: a token count must be an integer")
    return float(value) if value <= 1 else int(value)


def _positive_int(path: Path, raw: dict, key: str) -> int | None:
    value = raw.get(key)
    if value is not None:
        _in_file(path, at_least, f"'{key}'", value, 1)
    return value


def _in_file(path: Path, check: Any, *args: Any) -> None:
    """Run one of vtc.checks' validators, naming the suite file in its error."""
    try:
        check(*args)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _synth(path: Path, value: Any, base: Path) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: synth_data must be a mapping with keys {', '.join(SYNTH_KEYS)}")
    _check_keys(path, value, SYNTH_KEYS, where="synth_data.")
    missing = [k for k in ("seed", "count") if k not in value]
    if missing:
        raise ValueError(f"{path}: synth_data needs {', '.join(missing)}")
    count = _positive_int(path, value, "count")
    seed = value["seed"]
    _in_file(path, at_least, "'seed'", seed, 0)
    directory = _under(base, value["dir"]) if "dir" in value else default_synth_dir()
    return {"dir": directory, "seed": seed, "count": count}


def default_synth_dir() -> Path:
    """Where the installed ``vtc_synth`` task reads its data (beside its yaml, inside the package)."""
    from ..tasks import TASKS_DIR

    return TASKS_DIR / "vtc_synth" / "data"


def _under(base: Path, value: Any) -> Path:
    """``value`` relative to the suite's directory (absolute paths stay), without ``..`` segments."""
    return Path(os.path.normpath(base / str(value)))
