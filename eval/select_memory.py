"""Peak memory of frame selection on a synthetic one-hour video at 1 fps (3600 frames, 640x360).

Writes eval/results/select_memory.md and .json. Run from the repository root:

    python eval/select_memory.py

The video has a new background every 5 minutes, a moving square, and one white flash at
FLASH_SECOND. Each selector runs in a fresh process (so peaks do not mix) through
vtc.VideoProcessor with the shipped reference model's processor: candidates decoded at 32x32,
then only the chosen frames at the model's resolution. The peak resident set size (ru_maxrss) of
that process is reported next to the baseline after importing torch/transformers and loading
the model, and next to what holding every frame at full resolution would take.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SECONDS, WIDTH, HEIGHT, FLASH_SECOND = 3600, 640, 360, 2345
SELECTORS = ["uniform-frames", "keyframes", "keyclips(relevance=novelty)", "scenes", "fps"]
TOKENS = 512


def write_video(path: Path) -> None:
    """3600 frames at 1 fps, encoded frame by frame (never all in memory)."""
    import av

    rng = np.random.default_rng(0)
    colors = rng.integers(30, 220, size=(SECONDS // 300 + 1, 3))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for second in range(SECONDS):
            frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            frame[:] = colors[second // 300]
            x = (second * 7) % (WIDTH - 60)
            frame[150:210, x : x + 60] = (255, 40, 40)
            if second == FLASH_SECOND:
                frame[:] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(path: Path, select: str) -> dict:
    """One selector in this process: baseline after loading, then peak after selection + processing."""
    import vtc
    from vtc.runner import default_model_path, load_model

    model, processor = load_model(default_model_path(), device="cpu")
    baseline = peak_mib()
    start = time.perf_counter()
    inputs = vtc.VideoProcessor(processor, select, tokens=TOKENS, model=model, candidate_fps=1.0)([path], ["What flashed?"])
    seconds = time.perf_counter() - start
    record = inputs.vtc_selection
    frames = record.selected_frames[0]
    return {
        "select": select, "baseline_mib": baseline, "peak_mib": peak_mib(), "seconds": seconds,
        "frames_selected": len(frames), "visual_tokens": record.visual_tokens[0], "budget_tokens": record.budget_tokens[0],
        "scale": record.scale[0], "flash_selected": FLASH_SECOND in frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=Path(".cache/select/one-hour-1fps.mp4"))
    parser.add_argument("--out", type=Path, default=Path("eval/results/select_memory"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.video, args.measure)))
        return
    if not args.video.is_file():
        args.video.parent.mkdir(parents=True, exist_ok=True)
        write_video(args.video)
    rows = []
    for select in SELECTORS:
        out = subprocess.run([sys.executable, __file__, "--video", str(args.video), "--measure", select],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    full_mib = SECONDS * WIDTH * HEIGHT * 3 / 2**20
    result = {"video": {"seconds": SECONDS, "fps": 1, "width": WIDTH, "height": HEIGHT, "flash_second": FLASH_SECOND},
              "token_budget": TOKENS, "all_frames_full_resolution_mib": full_mib, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Frame selection on a one-hour video: peak memory",
        "",
        f"Synthetic {SECONDS} s video at 1 fps, {WIDTH}x{HEIGHT}, new background every 5 min, one white flash at "
        f"{FLASH_SECOND} s. vtc.VideoProcessor with the reference model's processor, budget {TOKENS} visual tokens, "
        "candidates at 1 fps decoded at 32x32. Peak RSS per selector in a fresh process; baseline = after "
        f"loading torch, transformers and the model. Holding every frame at full resolution would take {full_mib:.0f} MiB.",
        "Produced by `python eval/select_memory.py` (CPU, shared machine).",
        "",
        "| selector | baseline MiB | peak MiB | seconds | frames | tokens / budget | scale | flash frame kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['select']}` | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {r['seconds']:.1f} | "
                     f"{r['frames_selected']} | {r['visual_tokens']} / {r['budget_tokens']} | {r['scale']:g} | "
                     f"{'yes' if r['flash_selected'] else 'no'} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
