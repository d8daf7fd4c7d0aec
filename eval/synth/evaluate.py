"""Answer every item of a synthetic dataset with a (compressed) model: accuracy, tokens, evidence kept.

Beside accuracy, each item records how much of the evidence the question needs survived
compression (the renderer knows where it is), so "the method dropped the information" can be told
apart from "the model is confused by the compressed input".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import at_least
from .dataset import load_dataset
from .model import parse_answer, question_text
from .tiers import MERGED_CELL, TEMPORAL_PATCH


def evidence_tokens(item: dict[str, Any], grid: tuple[int, int, int]) -> set[int]:
    """Visual-token indices (t-major, h, w) whose cell overlaps any evidence box of the item."""
    _, height, width = grid
    tokens: set[int] = set()
    for frame, y0, x0, y1, x1 in item["evidence"]:
        t = frame // TEMPORAL_PATCH
        for h in range(y0 // MERGED_CELL, min(height, -(-y1 // MERGED_CELL))):
            for w in range(x0 // MERGED_CELL, min(width, -(-x1 // MERGED_CELL))):
                tokens.add((t * height + h) * width + w)
    return tokens


@dataclass
class PreparedBatch:
    """Model inputs of a chunk of items, built once and reused for every method and budget."""

    items: list[dict[str, Any]]
    inputs: Any
    grids: list[tuple[int, int, int]]  # merged token grid (T, H, W) per item


def prepare(
    data_dir: str | Path, processor: Any, num_frames: int = 16, batch_size: int = 16, limit: int | None = None,
    progress: bool = True,
) -> list[PreparedBatch]:
    """Decode and process every item once (the expensive, method-independent part)."""
    from ..runner import build_inputs
    from ..video import load_video

    at_least("batch_size", batch_size, 1)
    if limit is not None:
        at_least("limit", limit, 1)  # a negative limit would silently drop items from the end
    data_dir = Path(data_dir)
    items = load_dataset(data_dir)[:limit]
    batches = []
    for start in tqdm(range(0, len(items), batch_size), desc="prepare", disable=not progress):
        chunk = items[start : start + batch_size]
        videos = [load_video(data_dir / it["video"], num_frames=num_frames) for it in chunk]
        inputs = build_inputs(processor, videos, [question_text(it) for it in chunk])
        grids = [(t, h // 2, w // 2) for t, h, w in inputs["video_grid_thw"].tolist()]
        batches.append(PreparedBatch(chunk, inputs, grids))
    return batches


def evaluate(
    data_dir: str | Path,
    model: Any,
    processor: Any,
    num_frames: int = 16,
    batch_size: int = 16,
    limit: int | None = None,
    progress: bool = True,
    max_new_tokens: int = 3,
    batches: list[PreparedBatch] | None = None,
) -> dict[str, Any]:
    """Accuracy overall and by type, mean visual tokens before/after, and evidence survival by type.

    ``model`` may be wrapped with ``vtc.wrap``; unwrapped, every token counts as kept. Pass
    ``batches`` from :func:`prepare` to skip decoding when evaluating many methods.
    """
    from ..runner import generate_answers

    if batches is None:
        batches = prepare(data_dir, processor, num_frames, batch_size, limit, progress)
    records = []
    for batch in tqdm(batches, desc="synth eval", disable=not progress):
        replies = generate_answers(model, processor, batch.inputs, max_new_tokens=max_new_tokens)
        stats = getattr(model, "vtc_stats", None)
        for b, (item, reply, grid) in enumerate(zip(batch.items, replies, batch.grids)):
            total = grid[0] * grid[1] * grid[2]
            kept = final_kept(stats, b) if stats is not None else list(range(total))
            evidence = evidence_tokens(item, grid)
            records.append({
                "type": item["type"], "correct": parse_answer(reply, item["options"]) == item["answer"],
                "reply": reply, "tokens_in": total, "tokens_kept": len(kept),
                "flop_retention": stats.sample_flop_retention(b) if stats is not None else 1.0,
                "evidence_kept": len(evidence & set(kept)) / len(evidence) if evidence else 1.0,
            })
    return summarise(records)


def final_kept(stats: Any, sample: int) -> list[int]:
    """Tokens that survived every stage (the deepest layer cut if there is one)."""
    if stats.layer_kept_indices:
        return stats.layer_kept_indices[max(stats.layer_kept_indices)][sample]
    return stats.kept_indices[sample]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r)
    return {
        "overall": float(np.mean([r["correct"] for r in records])) if records else 0.0,
        "by_type": {t: float(np.mean([r["correct"] for r in rs])) for t, rs in sorted(by_type.items())},
        "n": len(records),
        "tokens_in": float(np.mean([r["tokens_in"] for r in records])) if records else 0.0,
        "tokens_kept": float(np.mean([r["tokens_kept"] for r in records])) if records else 0.0,
        "flop_retention": float(np.mean([r["flop_retention"] for r in records])) if records else 0.0,
        "evidence_kept": {t: float(np.mean([r["evidence_kept"] for r in rs])) for t, rs in sorted(by_type.items())},
        "evidence_all_lost": {
            t: float(np.mean([r["evidence_kept"] == 0.0 for r in rs])) for t, rs in sorted(by_type.items())
        },
    }


def blank_frames(frames: np.ndarray, value: int = 128) -> np.ndarray:
    """The same clip with every pixel one grey: what the model answers without the video."""
    return np.full_like(frames, value)


@torch.no_grad()
def answer_item(model: Any, processor: Any, data_dir: Path, item: dict[str, Any], num_frames: int = 16) -> str:
    from ..runner import build_inputs, generate_answers
    from ..video import load_video

    video = load_video(Path(data_dir) / item["video"], num_frames=num_frames)
    return generate_answers(model, processor, build_inputs(processor, [video], [question_text(item)]), max_new_tokens=4)[0]
