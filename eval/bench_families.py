"""Prefill time of vtc methods vs the uncompressed model on mid-sized random InternVL, SmolVLM and VideoLLaMA3.

Each family gets its released tokens-per-frame (InternVL 256 at 448 px, SmolVLM2 64 at 512 px,
VideoLLaMA3 256 at 448 px), a small vision tower and the same language model size, so the table
shows what compression buys on each family's own prompt layout. Random weights are fine here:
speed depends on shapes, not on what the weights learned. Prompts are assembled as the family's
processor writes them (frame markers and image start/end tokens around each frame). Run:

    python eval/bench_families.py --out eval/results/families_prefill_cpu.md

On a GPU pass --device cuda --dtype bfloat16 (and --attn flash_attention_2 if installed).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

import vtc

SPECS = [("random", 0.5), ("random", 0.25), ("random", 0.1), ("dtd", 0.25), ("dtd", 0.1), ("fastv@2", 0.25)]
VISUAL, START, END, GLOBAL, TEXT, MARK, NEWLINE = 1001, 1002, 1003, 1004, 5, 7, 9
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


def text_config(model_type: str, layers: int, hidden: int) -> dict:
    return dict(model_type=model_type, vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 3,
                num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256))


def prompt(frames: int, per_frame: list[int], text_tokens: int = 64) -> list[int]:
    """Text, then ``Frame i:`` markers and one block of ``per_frame`` ids per frame, then the question."""
    ids = [TEXT] * (text_tokens // 2)
    for _ in range(frames):
        ids += [MARK, MARK] + per_frame + [NEWLINE]
    return ids + [TEXT] * (text_tokens // 2)


def internvl(frames: int, layers: int, hidden: int):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(text_config=text_config("qwen2", layers, hidden),
                            vision_config=dict(VISION, image_size=448, patch_size=14), image_token_id=VISUAL)
    ids = prompt(frames, [START] + [VISUAL] * 256 + [END])
    return InternVLForConditionalGeneration(config), dict(
        input_ids=torch.tensor([ids]), pixel_values=torch.randn(frames, 3, 448, 448))


def smolvlm(frames: int, layers: int, hidden: int):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    config = SmolVLMConfig(text_config=text_config("llama", layers, hidden), scale_factor=4, image_token_id=VISUAL,
                           vision_config=dict(VISION, image_size=512, patch_size=16))
    ids = prompt(frames, [START, GLOBAL] + [VISUAL] * 64 + [START])
    return SmolVLMForConditionalGeneration(config), dict(
        input_ids=torch.tensor([ids]), pixel_values=torch.randn(1, frames, 3, 512, 512))


def video_llama_3(frames: int, layers: int, hidden: int):
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    config = VideoLlama3Config(text_config=text_config("qwen2", layers, hidden), vision_config=dict(VISION, patch_size=14),
                               image_token_id=VISUAL + 10, video_token_id=VISUAL)
    ids = prompt(frames, [VISUAL] * 256)
    return VideoLlama3ForConditionalGeneration(config), dict(
        input_ids=torch.tensor([ids]), pixel_values_videos=torch.randn(frames * 32 * 32, 3 * 14 * 14),
        video_grid_thw=torch.tensor([[frames, 32, 32]]), video_merge_sizes=torch.tensor([2]),
        video_compression_mask=torch.ones(frames * 256, dtype=torch.bool))


FAMILIES = {"internvl": (internvl, 16), "smolvlm": (smolvlm, 32), "video_llama_3": (video_llama_3, 16)}


def timed(model, inputs: dict, repeats: int) -> float:
    """Best prefill ms over ``repeats`` (vision encoder included), CUDA-synchronised."""
    cuda = next(model.parameters()).device.type == "cuda"
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs, use_cache=False)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=Path("eval/results/families_prefill_cpu.md"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for family in tqdm(args.families, desc="families"):
        build, frames = FAMILIES[family]
        torch.manual_seed(0)
        model, inputs = build(frames, args.layers, args.hidden)
        model = model.to(device=args.device, dtype=dtype).eval().requires_grad_(False)
        model.set_attn_implementation(args.attn)
        inputs = {k: v.to(args.device, dtype) if v.is_floating_point() else v.to(args.device) for k, v in inputs.items()}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        timed(model, inputs, 1)  # warm-up
        base = timed(model, inputs, args.repeats)
        measured = []
        for spec, retain in SPECS:
            with vtc.compressed(model, spec, retain=retain):
                ms = timed(model, inputs, args.repeats)
                stats = model.vtc_stats
            tokens = f"{stats.visual_tokens[0]}->{sum(stats.tokens_kept)}"
            if stats.layer_kept_indices:
                tokens += "->" + str(sum(len(k) for k in next(iter(stats.layer_kept_indices.values()))))
            measured.append(dict(family=family, frames=frames, method=spec, retain=retain, tokens=tokens, ms=ms,
                                 method_ms=sum(s.ms for s in stats.stages)))
        # The uncompressed time is taken before and after the methods (best of both), so a load change
        # on a shared machine during the run does not inflate the speed-ups.
        base = min(base, timed(model, inputs, args.repeats))
        rows.append(dict(family=family, frames=frames, method="none", retain=1.0, tokens="-", ms=base, speedup=1.0,
                         method_ms=0.0))
        rows += [dict(row, speedup=base / row["ms"]) for row in measured]
    command = "python eval/bench_families.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"
    )
    header = (f"# Prefill time per family: random models ({args.layers} LLM layers x {args.hidden}, 2-layer vision "
              f"towers), {args.device} {args.dtype} {args.attn}\n\n"
              f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, shared with other jobs (CPU timings are noisy). Best of "
              f"{args.repeats} (uncompressed: best of that before and after the methods); vision encoder included. Command: `{command}`\n\n")
    table = ["| family | frames | method | retain | visual tokens | prefill ms | speed-up | of which method ms |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['family']} | {r['frames']} | {r['method']} | {r['retain']} | {r['tokens']} | {r['ms']:.1f} | "
              f"{r['speedup']:.2f}x | {r['method_ms']:.1f} |" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n".join(table) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
