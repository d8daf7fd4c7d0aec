"""``vtc viz`` end to end: decode, run the wrapped model's prefill once, draw, save as PNG, GIF or mp4."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..runner import build_inputs
from ..stats import CompressionStats
from ..video import DecodedVideo, load_video
from .cells import TokenCells, token_cells
from .draw import TILE_WIDTH, draw, draw_frames

DEFAULT_QUESTION = "What happens in this video?"
GIF_MS_PER_FRAME = 400


@dataclass
class Rendering:
    """What a picture needs: the stats of one compressed prefill, the frames and their token cells."""

    stats: CompressionStats
    frames: np.ndarray
    cells: TokenCells
    title: str
    evidence: list[list[int]] = field(default_factory=list)

    def sheet(self, tile_width: int = TILE_WIDTH) -> Image.Image:
        return draw(self.stats, self.frames, self.cells, title=self.title, evidence=self.evidence,
                    tile_width=tile_width)

    def frame_pictures(self) -> list[Image.Image]:
        return draw_frames(self.stats, self.frames, self.cells, title=self.title, evidence=self.evidence)


def compress_once(model: Any, processor: Any, video: DecodedVideo, question: str, method: str, *,
                  retain: float | None = None, tokens: int | None = None, title: str = "",
                  evidence: list[list[int]] | None = None) -> Rendering:
    """Wrap ``model`` with ``method``, run one prefill on ``video`` and unwrap; ``evidence`` boxes are
    given in source-frame indices and moved onto the decoded frames."""
    import vtc

    inputs = build_inputs(processor, [video], [question]).to(model.device)
    vtc.wrap(model, method, retain=retain, tokens=tokens)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False, logits_to_keep=1)
        stats = model.vtc_stats
    finally:
        vtc.unwrap(model)
    cells = token_cells(model, processor, inputs, len(video.frames), video.frames.shape[1:3])
    position = {int(source): i for i, source in enumerate(video.indices)}
    moved = [[position[e[0]], *e[1:]] for e in evidence or [] if e[0] in position]
    return Rendering(stats, np.asarray(video.frames), cells, title, moved)


def synth_item(directory: Path, index: int) -> tuple[Path, dict]:
    """The video path and item ``index`` of a ``vtc synth make`` directory."""
    lines = (directory / "data.jsonl").read_text().splitlines()
    if not 0 <= index < len(lines):
        raise ValueError(f"--index {index} is out of range: {directory} holds {len(lines)} items")
    item = json.loads(lines[index])
    return directory / item["video"], item


def visualise(source: str, method: str, *, retain: float | None = None, tokens: int | None = None,
              model_path: str | None = None, index: int = 0, question: str | None = None,
              num_frames: int = 16, device: str = "auto") -> Rendering:
    """A video file, or item ``index`` of a synthetic dataset directory (its question and evidence boxes)."""
    from ..runner import default_model_path, load_model
    from ..synth.model import question_text

    path, item = Path(source), None
    if path.is_dir() and (path / "data.jsonl").is_file():
        path, item = synth_item(path, index)
    video = load_video(path, num_frames=num_frames)
    model, processor = load_model(model_path or default_model_path(), device=device)
    budget = f" retain {retain:g}" if retain is not None else (f" {tokens} tokens" if tokens is not None else "")
    if item is None:
        return compress_once(model, processor, video, question or DEFAULT_QUESTION, method, retain=retain,
                             tokens=tokens, title=f"{path.name}: {method}{budget}")
    title = f"{item['type']} item {index}: {method}{budget} (answer: {item['answer_text']})"
    return compress_once(model, processor, video, question or question_text(item), method, retain=retain,
                         tokens=tokens, title=title, evidence=item.get("evidence", []))


def save(rendering: Rendering, out: Path) -> Path:
    """PNG: the sheet of frame groups; GIF / mp4: one picture per frame."""
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        rendering.sheet().save(out, optimize=True)
    elif suffix == ".gif":
        first, *rest = rendering.frame_pictures()
        first.save(out, save_all=True, append_images=rest, duration=GIF_MS_PER_FRAME, loop=0)
    elif suffix == ".mp4":
        write_mp4(out, rendering.frame_pictures())
    else:
        raise ValueError(f"--out must end in .png, .gif or .mp4, got {out.name!r}")
    return out


def write_mp4(path: Path, pictures: list[Image.Image], fps: float = 1000.0 / GIF_MS_PER_FRAME) -> None:
    """H.264 through PyAV; sides padded to even numbers as yuv420p requires."""
    import av

    width, height = pictures[0].width + pictures[0].width % 2, pictures[0].height + pictures[0].height % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(100))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for picture in pictures:
            canvas = Image.new("RGB", (width, height), "white")
            canvas.paste(picture, (0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(canvas)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
