"""What a wheel holds: every package folder, the reference model and the lmms-eval tasks.

CI builds the wheel and runs the main job from it outside the checkout; these tests catch the cause
(a folder package discovery misses) in the ordinary test run."""
from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _discovered() -> tuple[list[str], dict[str, str]]:
    setup = runpy.run_path(str(REPO / "setup.py"), run_name="setup_discovery")
    return setup["packages"](), setup["MAPPED_FOLDERS"]


def test_every_folder_with_python_code_is_a_discovered_package() -> None:
    packages, mapped = _discovered()
    roots = {"vtc": REPO / "vtc", **{name: REPO / folder for name, folder in mapped.items()}}
    expected = set()
    for name, root in roots.items():
        for source in root.rglob("*.py"):
            if "__pycache__" in source.parts or "data" in source.relative_to(root).parts:
                continue
            parts = source.parent.relative_to(root).parts
            expected.add(".".join((name, *parts)))
    assert expected - set(packages) == set()


def test_task_folders_ship_their_yaml_files() -> None:
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["vtc.tasks"].split(",")]
    tasks = REPO / "eval" / "tasks"
    shipped = {path for pattern in patterns for path in tasks.glob(pattern)}
    configs = {path for path in tasks.rglob("*") if path.is_file() and (path.suffix == ".yaml" or path.name.endswith("_yaml"))
               and "data" not in path.relative_to(tasks).parts}
    assert configs and configs == shipped
