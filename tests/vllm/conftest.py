"""The vLLM plugin's tests run in the environment .ci/vllm-env builds (`pytest tests/vllm`); elsewhere they
are reported as skipped. vLLM runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so a test can read the
model object."""
from __future__ import annotations

import importlib.util
import os

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if HAVE_VLLM:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="vLLM is not installed: build its environment with .ci/vllm-env VENV")
    for item in items if not HAVE_VLLM else []:
        if "tests/vllm/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
