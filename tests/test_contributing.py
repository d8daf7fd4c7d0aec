"""CONTRIBUTING.md's checklists name code: every cited repository path exists, and every name a checklist
cites is declared where that checklist says it lives, so the checklists cannot drift from the code."""
from __future__ import annotations

import builtins
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT = (REPO / "CONTRIBUTING.md").read_text()
# a command, a task-name prefix, the standard decorator and its hook
NOT_CODE = {"pytest", "vtc_", "dataclass", "__post_init__"}


def _section(title: str) -> str:
    """The text under the ``## <title>...`` heading."""
    parts = re.split(r"^## ", TEXT, flags=re.M)[1:]
    return next(part for part in parts if part.startswith(title))


def _cited_names(section: str) -> list[str]:
    """The identifier each backticked code span names (``Method.resolve_budget`` -> resolve_budget,
    ``frame_grid()`` -> frame_grid, ``rope = "1d"`` -> rope); paths, commands and literals are skipped."""
    names = []
    for span in re.findall(r"`([^`]+)`", section):
        match = re.fullmatch(r"@?([A-Za-z_][\w.]*)(\(.*\).*| = .*)?", span)
        if match and "/" not in span:
            name = match[1].split(".")[-1]
            if name not in NOT_CODE and not hasattr(builtins, name):
                names.append(name)
    return names


def _namespace(*owners: object) -> set[str]:
    names: set[str] = set()
    for owner in owners:
        names |= set(dir(owner)) | {getattr(owner, "__name__", "")}
        if dataclasses.is_dataclass(owner):
            names |= {f.name for f in dataclasses.fields(owner)}
    return names


def test_every_cited_repository_path_exists() -> None:
    for span in re.findall(r"`([^`]+)`", TEXT):
        if re.fullmatch(r"(vtc|patches|tests|eval)/[\w./-]*", span):
            assert (REPO / span.rstrip("/")).exists(), f"CONTRIBUTING.md cites {span}, which does not exist"


def _owners(section: str) -> tuple[object, ...]:
    import vtc
    import vtc.patches as patches
    import vtc.select.base as select_base
    from vtc.method import Method, ScoreMethod
    from vtc.patches.base import FamilyAdapter, VisualLayout
    from vtc.patches.frame_grid import FrameGridAdapter
    from vtc.patches.processor_policy import ProcessorPolicy
    from vtc.select.base import Frames, Selector, UnitCost

    from . import builders
    from .families import base as families

    plan_arguments = type("plan_arguments", (), dict.fromkeys(inspect.signature(Selector.plan).parameters))
    register_arguments = type("register_arguments", (), dict.fromkeys(inspect.signature(families.register).parameters))
    return {
        "Add a method": (vtc, Method, ScoreMethod),
        "Add a frame selector": (vtc, select_base, Selector, Frames, UnitCost, plan_arguments, FamilyAdapter),
        "Add a model family": (
            vtc, patches, builders, families, register_arguments, FamilyAdapter, FrameGridAdapter, VisualLayout,
            ProcessorPolicy,
        ),
    }[section]


@pytest.mark.parametrize("section", ["Add a method", "Add a frame selector", "Add a model family"])
def test_checklist_names_are_declared_where_it_says(section: str) -> None:
    known = _namespace(*_owners(section))
    missing = [name for name in _cited_names(_section(section)) if name not in known]
    assert missing == [], f"CONTRIBUTING.md '{section}' cites names the code does not declare there: {missing}"


def test_everything_vtc_asks_of_an_adapter_is_declared_in_the_base_class() -> None:
    """patches/base.py is the whole contract: vtc/ never calls an adapter hook the base class does not declare."""
    from vtc.patches.base import FamilyAdapter

    asked = set()
    for path in [*(REPO / "vtc").rglob("*.py"), *(REPO / "patches").rglob("*.py")]:
        asked |= set(re.findall(r"\badapter\.([a-z_]+)", path.read_text()))
    assert asked, "the scan found no adapter calls: the pattern no longer matches the code"
    assert sorted(name for name in asked if not hasattr(FamilyAdapter, name)) == []
