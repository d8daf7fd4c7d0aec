"""Serving cost of the vLLM plugin: time to first token and requests per second at concurrency 1, 4 and 16,
plain vLLM against vtc at retain 0.5 and 0.25 for two exact methods, through vLLM's OpenAI-compatible server on
localhost with the shipped reference model. Run from the repository root in the environment .ci/vllm-env builds:

    .venv-vllm/bin/python eval/vllm_serving.py --out eval/results/vllm_serving

Every request carries its own video (a `vtc synth make --seed 31337` item, 16 frames at 112 px: 128 visual
tokens) as an mp4 data URL and asks for exactly 8 tokens (`min_tokens`, `ignore_eos`); prefix caching and the
multimodal processor cache are off, so no request reuses another's work. Every configuration gets its own server
and the same videos; plain vLLM runs first and last, so drift of the machine's load shows as the gap between its
two runs. Writes OUT.md and OUT.json (with `uptime` before and after each server).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # eval.vllm_server, run as a script

from eval.vllm_server import Streamed, running_server, stream_chat, video_chat  # noqa: E402

CONCURRENCY = {1: 16, 4: 32, 16: 64}  # requests sent at each concurrency
WARMUP = 2
NEW_TOKENS = 8
SEED = 31337
METHODS = ("vidcom2", "dtd")
RETAINS = (0.5, 0.25)
SERVER_EXTRA = ("--no-enable-prefix-caching", "--mm-processor-cache-gb", "0")


def configs() -> list[tuple[str, dict | None]]:
    """(label, vtc entry) in run order: plain, every method x retain, plain again."""
    rows: list[tuple[str, dict | None]] = [("plain vLLM", None)]
    rows += [(f"{m}@{r}", {"method": m, "retain": r, "positions": "transformers"}) for m in METHODS for r in RETAINS]
    return rows + [("plain vLLM (again)", None)]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def level(url: str, bodies: list[dict], concurrency: int) -> dict[str, Any]:
    """Send ``bodies`` with at most ``concurrency`` in flight; latency figures and throughput."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        done: list[Streamed] = list(pool.map(lambda b: stream_chat(url, b), bodies))
    wall = time.perf_counter() - start
    ttft = sorted(d.ttft_s for d in done)
    if any(d.completion_tokens != NEW_TOKENS for d in done):
        raise RuntimeError(f"a request generated {[d.completion_tokens for d in done]} tokens, not {NEW_TOKENS}")
    return {
        "concurrency": concurrency, "requests": len(done), "wall_s": wall, "requests_per_s": len(done) / wall,
        "ttft_mean_s": statistics.fmean(ttft), "ttft_p50_s": ttft[len(ttft) // 2],
        "ttft_p90_s": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))],
        "latency_mean_s": statistics.fmean(d.total_s for d in done),
        "prompt_tokens_mean": statistics.fmean(d.prompt_tokens for d in done),
    }


def run_config(label: str, vtc: dict | None, bodies: dict[int, list[dict]], warmup: list[dict], logs: Path) -> dict:
    before = uptime()
    started = time.perf_counter()
    with running_server(vtc, logs / f"{label.replace(' ', '_').replace('@', '_')}.log", SERVER_EXTRA) as url:
        start_s = time.perf_counter() - started
        for body in warmup:
            stream_chat(url, body)
        levels = [level(url, bodies[c], c) for c in CONCURRENCY]
    row = {"label": label, "vtc": vtc, "server_start_s": start_s, "levels": levels,
           "uptime_before": before, "uptime_after": uptime()}
    print(f"{label}: " + ", ".join(f"c={lv['concurrency']} {lv['requests_per_s']:.1f} req/s "
                                   f"TTFT {1000 * lv['ttft_mean_s']:.0f} ms" for lv in levels), flush=True)
    return row


def request_bodies(data: Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """Warm-up requests, then each concurrency's own requests: every one a different item's video."""
    from vtc.synth import load_dataset
    from vtc.synth.model import question_text

    items = load_dataset(data)
    body = [video_chat(data / it["video"], question_text(it), NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)
            for it in items]
    per_level, at = {}, WARMUP
    for c, n in CONCURRENCY.items():
        per_level[c], at = body[at : at + n], at + n
    return body[:WARMUP], per_level


def write(out: Path, rows: list[dict], meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    plain = [r for r in rows if r["vtc"] is None]
    base = {c: statistics.fmean(p["levels"][i]["requests_per_s"] for p in plain) for i, c in enumerate(CONCURRENCY)}
    base_ttft = {c: statistics.fmean(p["levels"][i]["ttft_mean_s"] for p in plain) for i, c in enumerate(CONCURRENCY)}
    lines = [
        "# Serving cost through vLLM's OpenAI-compatible server (shipped reference model, CPU)",
        "",
        f"{meta['machine']}. Produced by `{meta['command']}` in {meta['wall_min']:.1f} min (environment: "
        "`.ci/vllm-env .venv-vllm`); vLLM " + meta["vllm"] + ", torch " + meta["torch"] + ".",
        "",
        f"Each request: its own synthetic video (16 frames at 112 px, 128 visual tokens) as an mp4 data URL, greedy, "
        f"exactly {NEW_TOKENS} new tokens; {WARMUP} warm-up requests per server; requests per concurrency: "
        + ", ".join(f"{n} at {c}" for c, n in CONCURRENCY.items())
        + ". Prefix caching and the multimodal processor cache are off. TTFT: from sending the request to the first "
        "streamed token (includes decoding the mp4 and vLLM's processor). Ratios are to the mean of the two plain runs.",
        "",
        "| config | prompt tokens | concurrency | requests/s | ratio | TTFT mean ms | ratio | TTFT p50 ms | TTFT p90 ms | uptime before -> after (load averages) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = f"{_load(r['uptime_before'])} -> {_load(r['uptime_after'])}"
        for lv in r["levels"]:
            c = lv["concurrency"]
            lines.append(
                f"| {r['label']} | {lv['prompt_tokens_mean']:.1f} | {c} | {lv['requests_per_s']:.2f} | "
                f"{lv['requests_per_s'] / base[c]:.2f} | {1000 * lv['ttft_mean_s']:.0f} | "
                f"{lv['ttft_mean_s'] / base_ttft[c]:.2f} | {1000 * lv['ttft_p50_s']:.0f} | {1000 * lv['ttft_p90_s']:.0f} | {load} |"
            )
    lines += ["", meta.get("notes", "")]
    out.with_suffix(".md").write_text("\n".join(lines).rstrip() + "\n")


def _load(uptime_line: str) -> str:
    return uptime_line.rsplit("load average:", 1)[-1].strip() if "load average" in uptime_line else uptime_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("eval/results/vllm_serving"))
    parser.add_argument("--data", type=Path, default=Path("out/vllm_serving_split"))
    parser.add_argument("--notes", default="", help="a paragraph appended to OUT.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import vllm

    from vtc.synth import make_dataset

    count = WARMUP + sum(CONCURRENCY.values())
    if not (args.data / "data.jsonl").exists():
        make_dataset(args.data, seed=SEED, count=count, progress=False)
    warmup, bodies = request_bodies(args.data)
    logs = args.data.parent / "vllm_serving_logs"  # server logs, not committed
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [run_config(label, vtc, bodies, warmup, logs) for label, vtc in configs()]
    meta = {
        "command": "python eval/vllm_serving.py " + shlex.join(sys.argv[1:]),
        "machine": f"A shared {os.cpu_count()}-core CPU machine ({platform.processor() or platform.machine()}; other "
                   "jobs ran beside this one, see the load averages)",
        "vllm": vllm.__version__, "torch": torch.__version__, "concurrency": CONCURRENCY, "new_tokens": NEW_TOKENS,
        "server_extra": SERVER_EXTRA, "wall_min": (time.perf_counter() - started) / 60, "notes": args.notes,
    }
    write(args.out, rows, meta)


if __name__ == "__main__":
    main()
