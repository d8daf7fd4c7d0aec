"""Package discovery: every package under vtc/, plus the two top-level folders the layout installs
under the vtc namespace (patches/ as vtc.patches, eval/synth as vtc.synth) and the lmms-eval tasks
(eval/tasks as vtc.tasks). Metadata and requirements live in setup.cfg."""
from setuptools import find_namespace_packages, find_packages, setup

MAPPED_FOLDERS = {"vtc.patches": "patches", "vtc.synth": "eval/synth", "vtc.tasks": "eval/tasks"}


def packages() -> list[str]:
    found = find_packages(include=["vtc", "vtc.*"])
    for name, folder in MAPPED_FOLDERS.items():
        # Task folders hold yaml + utils.py without __init__.py: namespace discovery finds them too.
        found += [name] + [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*.data", "*.data.*"])]
    return found


if __name__ == "__main__":  # setuptools runs this file as __main__; tests read packages() without building
    setup(packages=packages(), package_dir={"vtc": "vtc", **MAPPED_FOLDERS})
