"""``vtc viz``: the bright cells of a picture are exactly the tokens that entered the LLM, on every family."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import vtc
from tests.builders import FAMILIES, tiny
from vtc.viz import draw_with_layout, token_cells
from vtc.viz.draw import DIM, PALETTE

COLOUR = np.array([200, 160, 120])
# Per family: frame (height, width) given to the processor and the token grid (T, H, W) of 8 such frames,
# from the builders' configs (Qwen 28 px merged cells and 2 frames per group, LLaVA-OneVision and
# LLaVA-NeXT-Video pooled to 2x2, Video-LLaVA 4x4 on a 56 px centre crop, 4x4 for the image-frame families).
GRIDS = {
    "qwen2_vl": ((112, 112), (4, 4, 4)), "qwen2_5_vl": ((112, 112), (4, 4, 4)), "qwen3_vl": ((128, 128), (4, 4, 4)),
    "llava_onevision": ((112, 112), (8, 2, 2)), "llava_next_video": ((112, 168), (8, 2, 2)),
    "video_llava": ((112, 168), (8, 4, 4)), "internvl": ((112, 112), (8, 4, 4)), "smolvlm": ((112, 112), (8, 4, 4)),
    "video_llama_3": ((112, 112), (8, 4, 4)),
}


def flat_clip(height: int, width: int, frames: int = 8) -> np.ndarray:
    return np.broadcast_to(COLOUR.astype(np.uint8), (frames, height, width, 3)).copy()


def compressed(family: str, spec: str, clip: np.ndarray, retain: float = 0.5):
    built = tiny(family)
    inputs = built.inputs([clip])
    vtc.wrap(built.model, spec, retain=retain)
    try:
        with torch.no_grad():
            built.model(**inputs, use_cache=False)
        stats = built.model.vtc_stats
    finally:
        vtc.unwrap(built.model)
    return stats, token_cells(built.model, built.processor, inputs, len(clip), clip.shape[1:3])


def centre_colour(image, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.asarray(image)[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)


def assert_row_matches(image, layout, row: int, kept: list[int]) -> None:
    bright = set(kept)
    for token in range(len(layout.cells)):
        expected = COLOUR if token in bright else np.round(COLOUR * DIM)
        got = centre_colour(image, layout.token_box(row, token))
        assert np.abs(got - expected).max() <= 2, (row, token, token in bright, got)


@pytest.mark.parametrize("family", FAMILIES)
def test_bright_cells_are_the_kept_indices(family: str) -> None:
    (height, width), grid = GRIDS[family]
    stats, cells = compressed(family, "random", flat_clip(height, width))
    assert cells.num_groups == grid[0] and cells.frames_per_group == 8 // grid[0]
    sizes = cells.box[:, 2:] - cells.box[:, :2]
    visible = min(height, width) if family in ("llava_next_video", "video_llava") else None
    assert np.allclose(sizes, [(visible or height) / grid[1], (visible or width) / grid[2]])
    assert 0 < len(stats.kept_indices[0]) < len(cells)
    image, layout = draw_with_layout(stats, flat_clip(height, width), cells)
    assert_row_matches(image, layout, 0, stats.kept_indices[0])


def test_centre_crop_families_map_tokens_into_the_crop() -> None:
    """LLaVA-NeXT-Video resizes the shortest edge to 56 and crops the middle 56x56: a 112x168 frame's
    tokens cover columns 28..140, and the pixels outside stay dimmed."""
    _, cells = compressed("llava_next_video", "random", flat_clip(112, 168))
    assert cells.box[:, 1].min() == pytest.approx(28) and cells.box[:, 3].max() == pytest.approx(140)


def test_layer_cut_row_shows_the_tokens_past_the_layer() -> None:
    stats, cells = compressed("qwen2_5_vl", "random:0.5>fastv@2:0.5", flat_clip(112, 112), retain=1.0)
    image, layout = draw_with_layout(stats, flat_clip(112, 112), cells)
    assert layout.rows == ["LLM input", "after layer 2"]
    assert_row_matches(image, layout, 0, stats.kept_indices[0])
    assert_row_matches(image, layout, 1, stats.layer_kept_indices[2][0])


def test_pool_records_each_token_merged_into_its_blocks_top_left_and_outlines_it() -> None:
    clip = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    stats, cells = compressed("qwen2_5_vl", "pool", clip, retain=0.25)
    merged = np.array(stats.merged_into[0])
    group, top, left = cells.group, cells.box[:, 0], cells.box[:, 1]
    cell = 28
    for token, rep in enumerate(merged):
        assert group[rep] == group[token]
        assert top[rep] == top[token] // (2 * cell) * 2 * cell and left[rep] == left[token] // (2 * cell) * 2 * cell
    assert sorted(set(merged.tolist())) == stats.kept_indices[0]
    image, layout = draw_with_layout(stats, clip, cells)
    rep = stats.kept_indices[0][1]
    x0, y0, _, _ = layout.token_box(0, rep)
    assert tuple(np.asarray(image)[y0 + 1, x0 + 1]) == PALETTE[rep % len(PALETTE)]


@pytest.mark.parametrize("spec", ["holitom", "prunevid", "fastvid"])
def test_merging_methods_record_a_kept_representative(spec: str) -> None:
    still = np.random.default_rng(1).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8)  # static: merged over time
    stats, _ = compressed("qwen2_5_vl", spec, np.repeat(still, 8, axis=0), retain=0.25)
    kept = set(stats.kept_indices[0])
    merged = stats.merged_into[0]
    assert len(merged) == stats.visual_tokens[0]
    assert all(merged[k] == k for k in kept)
    assert {r for r in merged if r >= 0} == kept
    assert sum(r >= 0 for r in merged) > len(kept)  # something was merged, not only kept


def test_non_merging_methods_record_no_merges() -> None:
    stats, _ = compressed("qwen2_5_vl", "dtd", flat_clip(112, 112))
    assert stats.merged_into == []


def test_viz_reports_a_video_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vtc.cli import main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert main(["viz", str(broken), "--method", "dtd", "--out", str(tmp_path / "out.png")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_viz_command_writes_png_gif_and_mp4(tmp_path: Path) -> None:
    from vtc.cli import main
    from vtc.synth import make_dataset

    data = make_dataset(tmp_path / "synth", seed=7, count=2)
    for suffix in (".png", ".gif", ".mp4"):
        out = tmp_path / f"needle{suffix}"
        assert main(["viz", str(data), "--index", "1", "--method", "dtd", "--retain", "0.25", "--out", str(out)]) == 0
        assert out.stat().st_size > 1000


def test_viz_command_modules_import_torch_lazily() -> None:
    """``vtc --help`` must not need torch: the command's modules import it only inside functions."""
    for name in ("cli.py", "cells.py", "draw.py", "__init__.py"):
        tree = ast.parse((Path(vtc.__file__).parent / "viz" / name).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top for a in n.names} | {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not any(n.split(".")[0] == "torch" or n.startswith(".render") for n in names), (name, names)
