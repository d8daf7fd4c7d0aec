"""The vLLM plugin's tests run in the environment .ci/vllm-env builds (`pytest tests/vllm`); elsewhere they
are skipped. vLLM runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so a test can read the model object."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed: build its environment with .ci/vllm-env VENV")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
