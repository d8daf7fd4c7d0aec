"""Prefill time and peak memory of vtc methods vs the uncompressed model, on a mid-sized random Qwen2.5-VL.

Random weights are fine here: speed depends on shapes, not on what the weights learned. Run:

    python eval/bench_prefill.py --out eval/results/prefill_cpu.md

On a GPU pass --device cuda --dtype bfloat16 (and --attn flash_attention_2 if installed).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import vtc

SPECS = ["random", "uniform", "pool", "dtd", "fastv@2"]
RETAINS = [0.5, 0.25, 0.1]


def build_model(layers: int, hidden: int, device: str, dtype: torch.dtype, attn: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
        vision_config=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=hidden,
                           fullatt_block_indexes=[3], window_size=112),
        image_token_id=1001, video_token_id=1002, vision_start_token_id=1003, vision_end_token_id=1004,
    )
    return Qwen2_5_VLForConditionalGeneration(config).to(device=device, dtype=dtype).eval().requires_grad_(False)


def make_inputs(model, frames: int, size: int, text_tokens: int, device: str, dtype: torch.dtype) -> dict:
    """A prompt of ``text_tokens`` text tokens followed by one video, built as the processor would."""
    patch, merge, tp = 14, 2, 2
    grid = torch.tensor([[frames // tp, size // patch, size // patch]], device=device)
    n_video = int(grid.prod()) // merge**2
    cfg = model.config
    ids = [5] * (text_tokens // 2) + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video
    ids += [cfg.vision_end_token_id] + [6] * (text_tokens // 2)
    input_ids = torch.tensor([ids], device=device)
    types = (input_ids == cfg.video_token_id).int() * 2
    pixels = torch.randn(int(grid.prod()), 3 * tp * patch * patch, device=device, dtype=dtype)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=types,
                pixel_values_videos=pixels, video_grid_thw=grid, second_per_grid_ts=torch.tensor([1.0], device=device))


def timed(model, inputs: dict, repeats: int) -> tuple[float, float]:
    """(best prefill ms over repeats, peak CUDA MiB or nan on CPU)."""
    cuda = next(model.parameters()).device.type == "cuda"
    best = float("inf")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs, use_cache=False, logits_to_keep=1)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return best * 1000.0, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("eval/results/prefill_cpu.md"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model = build_model(args.layers, args.hidden, args.device, dtype, args.attn)
    model.set_attn_implementation(args.attn)
    inputs = make_inputs(model, args.frames, args.size, 64, args.device, dtype)
    timed(model, inputs, 1)  # warm-up
    base_ms, base_mem = timed(model, inputs, args.repeats)
    rows = [dict(method="none", retain=1.0, tokens=None, ms=base_ms, speedup=1.0, mem=base_mem, method_ms=0.0)]
    for spec in SPECS:
        for retain in RETAINS:
            with vtc.compressed(model, spec, retain=retain):
                ms, mem = timed(model, inputs, args.repeats)
                stats = model.vtc_stats
            rows.append(dict(method=spec, retain=retain, tokens=f"{stats.visual_tokens[0]}->{sum(stats.tokens_kept)}"
                             + (f"->{sum(len(k) for k in stats.layer_kept_indices[2])}" if stats.layer_kept_indices else ""),
                             ms=ms, speedup=base_ms / ms, mem=mem, method_ms=sum(s.ms for s in stats.stages)))
    header = (f"# Prefill time, random Qwen2.5-VL ({args.layers} layers x {args.hidden}, vision depth 4), "
              f"{args.frames} frames at {args.size}px, {args.device} {args.dtype} {args.attn}\n\n"
              f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads. Best of {args.repeats}; vision encoder included. "
              "Command: `python eval/bench_prefill.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out") + "`\n\n")
    table = ["| method | retain | visual tokens | prefill ms | speed-up | of which method ms | peak MiB |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['retain']} | {r['tokens'] or '-'} | {r['ms']:.1f} | {r['speedup']:.2f}x | "
              f"{r['method_ms']:.1f} | {r['mem']:.0f} |" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n".join(table) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
