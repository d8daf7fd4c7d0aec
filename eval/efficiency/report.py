"""Write the benchmark's JSON, markdown and plots; every table names the command that produced it."""
from __future__ import annotations

import json
from pathlib import Path


def add_ratios(rows: list[dict], gpu: bool = False) -> None:
    """Speed-up, FLOP-ideal speed-up and their ratio, against the row with method none.

    The clock is the process's CPU time on CPU (other users' load shows less in it) and the GPU's event
    time on CUDA (there the host's CPU time measures kernel launches, not the work).
    """
    llm, ttft = ("llm_ms", "ttft_ms") if gpu else ("llm_cpu_ms", "ttft_cpu_ms")
    base = next(r for r in rows if r["method"] == "none")
    for r in rows:
        r["speedup"] = base[llm] / r[llm]
        r["speedup_wall"] = base["llm_ms"] / r["llm_ms"]
        r["ideal_speedup"] = base["llm_gflop"] / r["llm_gflop"]
        r["measured_over_ideal"] = r["speedup"] / r["ideal_speedup"]
        r["ttft_speedup"] = base[ttft] / r[ttft]
        vision = "vision_ms" if gpu else "vision_cpu_ms"
        r["vision_speedup"] = base[vision] / r[vision] if r[vision] else float("nan")
        r["stage_share_of_prefill"] = r["stage_ms_total"] / base["llm_ms"]


def clock_text(device: str) -> str:
    if device.startswith("cuda"):
        return ("ms = GPU time between CUDA events, cpu = the host's CPU time (kernel launches). Ratios use the "
                "GPU time of the language model")
    return "ms = wall, cpu = process CPU time. Ratios use CPU time of the language model"


def cost_name(device: str) -> str:
    """The clock the scaling fits and the DivPrune share use."""
    return "GPU" if device.startswith("cuda") else "CPU"


def title(meta: dict) -> str:
    """What the file measured: the model and input only when a part ran the model."""
    parts = ", ".join(meta["parts"])
    if {"prefill", "decode"} & set(meta["parts"]):
        return f"{meta['model']}, {meta['frames']} frames at {meta['size']} px ({parts})"
    if "throughput" in meta["parts"]:
        return f"{meta['model']}, batched prefill ({parts})"
    return f"compression step alone, no model ({parts})"


def _table(header: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]


def markdown(result: dict) -> str:
    meta = result["meta"]
    parts = [f"# Efficiency: {title(meta)}", "", f"Command: `{meta['command']}`", ""]
    parts += [f"**Note:** {note}" for note in meta.get("notes", [])] + ([""] if meta.get("notes") else [])
    warmup = {"calls": "one discarded warm-up call per method (at its smallest retain)"}.get(
        meta["warmup"], "1 warm-up round")
    parts += [
             f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} thread(s), {meta['device']} "
             f"{meta['dtype']} sdpa. Load average (1, 5, 15 min) at start {meta['load_start']}, at end {meta['load_end']}. "
             f"Protocol: configurations interleaved round-robin, {warmup}, median of {meta['repeats']} rounds; "
             f"{clock_text(meta['device'])} (hooks on the language model; vtc's "
             "prefill stages run before it and are listed apart). FLOP-ideal = LLM prefill FLOPs uncompressed / "
             "compressed (causal attention counted, eval/efficiency/flops.py). Peak MiB: resident-set high-water "
             "mark above the resident set at the start of the forward, freed heap pages returned first (CPU), or "
             "allocator peak above what was allocated (CUDA). KV MiB: the cache's key and value tensors.",
             ""]
    rows = result["prefill"]
    parts += [] if not rows else _table(["method", "retain", "visual tokens (last layer)", "vision ms (cpu)", "vision speed-up", "vtc stages ms",
                     "stage / LLM prefill", "LLM ms (cpu)", "TTFT ms (cpu)", "TTFT speed-up", "peak MiB", "KV MiB", "speed-up", "FLOP-ideal", "measured / ideal"],
                    [[r["method"], r["retain"], f"{r['visual_tokens']}->{r['kept_tokens']} ({r['last_layer_tokens']})",
                      f"{r['vision_ms']:.0f} ({r['vision_cpu_ms']:.0f})", f"{r['vision_speedup']:.2f}x",
                      f"{r['stage_ms_total']:.1f}", f"{100 * r['stage_share_of_prefill']:.2f}%",
                      f"{r['llm_ms']:.0f} ({r['llm_cpu_ms']:.0f})", f"{r['ttft_ms']:.0f} ({r['ttft_cpu_ms']:.0f})",
                      f"{r['ttft_speedup']:.2f}x",
                      f"{r['peak_mib']:.0f}", f"{r['kv_mib']:.1f}", f"{r['speedup']:.2f}x", f"{r['ideal_speedup']:.2f}x",
                      f"{r['measured_over_ideal']:.2f}"] for r in rows])
    if result.get("decode"):
        d = result["decode"][0]
        parts += ["", f"## Decode: ms per token over {d['decode_tokens']} greedy tokens "
                  f"(median of {meta.get('decode_repeats', meta['repeats'])} run(s))", "",
                  "Mean over the tokens, and the median of the per-token intervals (robust to a burst of another "
                  "user's load). KV positions: what the last layer's cache holds after the prefill; attended: the entries "
                  "the last layer attended to at the last step (a cache stage's compact copy); KV MiB: every layer's "
                  "keys and values after the last step (a cache stage's whole prompt and compact copy both count).", ""]
        parts += _table(["method", "retain", "KV positions", "attended (last step)", "KV MiB (end)", "ms / token (cpu)",
                         "median ms / token (cpu)"],
                        [[r["method"], r["retain"], r["kv_tokens_last_layer"], r.get("kv_attended_last_layer", "-"),
                          f"{r['kv_mib_end']:.1f}" if "kv_mib_end" in r else "-",
                          f"{r['decode_ms_per_token']:.1f} ({r['decode_cpu_ms_per_token']:.1f})",
                          f"{r['decode_median_ms']:.1f} ({r['decode_median_cpu_ms']:.1f})"] for r in result["decode"]])
    if result.get("throughput"):
        t = result["throughput_meta"]
        parts += ["", f"## Batched prefill throughput ({t['frames']} frames at {t['size']} px per video, left-padded)", ""]
        parts += _table(["batch", "method", "retain", "visual tokens (sample 0)", "TTFT ms (cpu)", "videos / s",
                         "videos / cpu s", "peak MiB"],
                        [[r["batch"], r["method"], r["retain"], f"{r['visual_tokens']}->{r['kept_tokens']}",
                          f"{r['ttft_ms']:.0f} ({r['ttft_cpu_ms']:.0f})",
                          f"{r['videos_per_s']:.2f}", f"{r['videos_per_cpu_s']:.2f}", f"{r['peak_mib']:.0f}"]
                         for r in result["throughput"]])
    if result.get("scaling"):
        s = result["scaling_meta"]
        frames = s["frames"]
        parts += ["", f"## Compression step vs video length ({s['side']}x{s['side']} tokens per frame, D={s['dim']}, "
                  f"retain {s['retain']}, random video-like features, no model)", "",
                  f"{cost_name(meta['device'])} ms per frame count (peak MiB above the start in brackets); `-` = "
                  "skipped because the last two "
                  f"points predict more than {s['limit_s']:.0f} s. Exponent: slope of log time on log frames.", ""]
        lines = []
        for name, data in result["scaling"].items():
            by = {p["frames"]: p for p in data["points"]}
            lines.append([name, f"{data['exponent']:.2f}"] + [
                f"{by[f]['cost_ms']:.0f} ({by[f]['peak_mib']:.0f})" if f in by else "-" for f in frames])
        parts += _table(["method", "exponent"] + [f"{f} fr" for f in frames], lines)
    if result.get("divprune"):
        parts += ["", "## DivPrune against the prefill it precedes", "",
                  "Prefill estimated from its FLOP count (flops.py; the 7B shape is Qwen2.5-7B: 3584 x 28 layers, "
                  "28 heads, 4 KV heads, MLP 18944) at this process's measured float32 matrix-product throughput "
                  f"({cost_name(meta['device'])} time on both sides of the share).", ""]
        parts += _table(["tokens", "D", "retain", "DivPrune ms (cpu)", "peak MiB", "GEMM GFLOP/s", "prefill TFLOP",
                         "prefill s (estimate)", "share"],
                        [[r["tokens"], r["dim"], r["retain"], f"{r['ms']:.0f} ({r['cpu_ms']:.0f})", f"{r['peak_mib']:.0f}",
                          f"{r['gemm_gflops']:.0f}", f"{r['prefill_tflop']:.1f}", f"{r['prefill_ms_estimate'] / 1000:.0f}",
                          f"{100 * r['share_of_prefill']:.2f}%"] for r in result["divprune"]])
    hour = result.get("one_hour")
    if hour:
        parts += ["", "## One hour at 1 fps (3,600 frames): streaming selection before the encoder", "",
                  "From eval/results/select_memory.json (`python eval/select_memory.py`): vtc.VideoProcessor decodes "
                  f"candidates at 32x32 and only the chosen frames at full size; all frames at full size would take "
                  f"{hour['all_frames_full_resolution_mib']:.0f} MiB.", ""]
        parts += _table(["selector", "peak RSS MiB (after loading the model)", "seconds", "frames kept"],
                        [[r["select"], f"{r['peak_mib']:.0f} ({r['baseline_mib']:.0f})", f"{r['seconds']:.1f}",
                          r["frames_selected"]] for r in hour["rows"]])
    return "\n".join(parts) + "\n"


def plot(result: dict, path: Path) -> None:
    """Measured vs FLOP-ideal speed-up per method, and compression time vs frames (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["prefill"] if r["method"] != "none"]
    panels = [p for p, on in (("prefill", rows), ("scaling", result.get("scaling"))) if on]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    if rows:
        _speedup_panel(axes["prefill"], result, rows)
    if "scaling" in axes:
        _scaling_panel(axes["scaling"], result)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _speedup_panel(ax, result: dict, rows: list[dict]) -> None:
    top = max(max(r["ideal_speedup"], r["speedup"]) for r in rows) * 1.1
    ax.plot([1, top], [1, top], color="grey", lw=1, ls="--", label="measured = ideal")
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        ax.plot([r["ideal_speedup"] for r in mine], [r["speedup"] for r in mine], "o-", label=name, ms=4)
    ax.set(xlabel="FLOP-ideal LLM prefill speed-up", ylabel="measured (CPU time)", xscale="log", yscale="log",
           title=f"{result['meta']['model']}: {result['prefill'][0]['visual_tokens']} visual tokens")
    ax.legend(fontsize=7)


def _scaling_panel(ax, result: dict) -> None:
    for name, data in result["scaling"].items():
        pts = data["points"]
        ax.plot([p["tokens"] for p in pts], [p["cost_ms"] / 1000 for p in pts], "o-", ms=3,
                label=f"{name} ({data['exponent']:.2f})")
    ax.set(xlabel="visual tokens (196 per frame)", ylabel=f"compression step, {cost_name(result['meta']['device'])} s", xscale="log", yscale="log",
           title=f"cost vs length (fitted exponent), D={result['scaling_meta']['dim']}")
    ax.legend(fontsize=7, ncol=2)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
