"""Draw kept tokens bright and dropped ones dimmed over the frames the model saw (numpy and PIL only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .cells import TokenCells

DIM = 0.3  # a dropped token's pixels keep this share of their brightness
TILE_WIDTH = 224
TILES_PER_LINE = 8
LINE = 12  # height of one line of text
CAPTION_WIDTH = 400  # frame pictures (GIF, mp4) are at least this wide so their caption fits
PAD = 4
EVIDENCE = (255, 230, 0)
SELECTED = (0, 200, 90)
# Outline colours of merge groups: each representative's colour, cycled by its index.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40))
LEGEND = ("bright: token enters the LLM; dim: dropped; outlined: merged into the token with the thick outline "
          "of the same colour; yellow: evidence; green bar: frames kept by the select stage")


@dataclass
class SheetLayout:
    """Where each tile sits on the sheet: one row of frame-group tiles per stage shown.

    rows: ``"LLM input"`` (tokens entering the LLM), then ``"after layer k"`` for each layer-stage cut.
    """

    cells: TokenCells
    scale: float
    tile_size: tuple[int, int]  # (height, width)
    top: int  # y where the first row starts (below the caption)
    rows: list[str] = field(default_factory=list)

    @property
    def lines_per_row(self) -> int:
        return -(-self.cells.num_groups // TILES_PER_LINE)

    @property
    def row_height(self) -> int:
        return LINE + self.lines_per_row * (LINE + self.tile_size[0] + PAD)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole sheet."""
        columns = min(self.cells.num_groups, TILES_PER_LINE)
        return columns * (self.tile_size[1] + PAD) + PAD, self.top + len(self.rows) * self.row_height

    def tile_origin(self, row: int, group: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of frame group ``group``'s tile in stage row ``row``."""
        line, column = divmod(group, TILES_PER_LINE)
        x = PAD + column * (self.tile_size[1] + PAD)
        y = self.top + row * self.row_height + LINE + line * (LINE + self.tile_size[0] + PAD) + LINE
        return x, y

    def token_box(self, row: int, token: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) half-open pixels of visual token ``token``'s cell in stage row ``row``."""
        x, y = self.tile_origin(row, int(self.cells.group[token]))
        y0, x0, y1, x1 = _scaled(self.cells.box[token], self.scale)
        return x + x0, y + y0, x + x1, y + y1


def draw(stats: Any, frames: np.ndarray, cells: TokenCells, *, sample: int = 0, title: str = "",
         evidence: Sequence[Sequence[int]] = (), tile_width: int = TILE_WIDTH) -> Image.Image:
    """A sheet of every frame group (its first frame) with sample ``sample``'s kept tokens bright.

    ``frames``: uint8 [F, H, W, 3], the frames the processor received; ``evidence``: synthetic items'
    ``[frame, y0, x0, y1, x1]`` boxes. Layer-stage cuts add one row per layer.
    """
    return draw_with_layout(stats, frames, cells, sample=sample, title=title, evidence=evidence,
                            tile_width=tile_width)[0]


def draw_with_layout(stats: Any, frames: np.ndarray, cells: TokenCells, *, sample: int = 0, title: str = "",
                     evidence: Sequence[Sequence[int]] = (), tile_width: int = TILE_WIDTH
                     ) -> tuple[Image.Image, SheetLayout]:
    """:func:`draw` and the layout that locates each token on it (tests read pixels through it)."""
    _check_frames(frames, cells)
    caption = caption_lines(stats, sample, title) + [LEGEND]
    scale = tile_width / frames.shape[2]
    rows = [("LLM input", stats.kept_indices[sample])]
    rows += [(f"after layer {k}", kept[sample]) for k, kept in sorted(stats.layer_kept_indices.items())]
    layout = SheetLayout(cells, scale, (round(frames.shape[1] * scale), tile_width), PAD + LINE * len(caption) + PAD,
                         [name for name, _ in rows])
    sheet = Image.new("RGB", layout.size, "white")
    pen = ImageDraw.Draw(sheet)
    for i, line in enumerate(caption):
        pen.text((PAD, PAD + i * LINE), line, fill="black")
    selected = _selected_groups(stats, sample, cells)
    merged = stats.merged_into[sample] if stats.merged_into else []
    for row, (name, kept) in enumerate(rows):
        pen.text((PAD, layout.top + row * layout.row_height), name, fill="black")
        for group in range(cells.num_groups):
            first = group * cells.frames_per_group
            tile = render_tile(frames[first], cells, group, kept, merged if row == 0 else [], scale,
                               [e for e in evidence if e[0] // cells.frames_per_group == group])
            x, y = layout.tile_origin(row, group)
            sheet.paste(tile, (x, y))
            label = f"frames {first}-{first + cells.frames_per_group - 1}" if cells.frames_per_group > 1 else f"frame {first}"
            pen.text((x, y - LINE), label, fill="black")
            if group in selected:
                pen.rectangle((x, y - 2, x + tile.width - 1, y - 1), fill=SELECTED)
    return sheet, layout


def draw_frames(stats: Any, frames: np.ndarray, cells: TokenCells, *, sample: int = 0, title: str = "",
                evidence: Sequence[Sequence[int]] = (), tile_width: int = TILE_WIDTH) -> list[Image.Image]:
    """One picture per source frame (for a GIF or mp4): the frame with its group's tokens of the LLM input."""
    _check_frames(frames, cells)
    scale = tile_width / frames.shape[2]
    kept = stats.kept_indices[sample]
    merged = stats.merged_into[sample] if stats.merged_into else []
    caption = caption_lines(stats, sample, title)
    pictures = []
    for index, frame in enumerate(frames[: cells.num_groups * cells.frames_per_group]):
        group = index // cells.frames_per_group
        tile = render_tile(frame, cells, group, kept, merged, scale, [e for e in evidence if e[0] == index])
        width = max(tile.width, CAPTION_WIDTH)
        picture = Image.new("RGB", (width, tile.height + LINE * (len(caption) + 1) + PAD), "white")
        picture.paste(tile, (0, 0))
        pen = ImageDraw.Draw(picture)
        for i, line in enumerate([f"frame {index} (group {group})", *caption]):
            pen.text((PAD, tile.height + PAD + i * LINE), line, fill="black")
        pictures.append(picture)
    return pictures


def render_tile(frame: np.ndarray, cells: TokenCells, group: int, kept: Sequence[int], merged: Sequence[int],
                scale: float, evidence: Sequence[Sequence[int]]) -> Image.Image:
    """One frame resized by ``scale``: group ``group``'s kept cells at full brightness, the rest dimmed,
    merge groups outlined in their representative's colour, evidence boxes in yellow."""
    height, width = round(frame.shape[0] * scale), round(frame.shape[1] * scale)
    picture = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC)).astype(np.float32)
    out = picture * DIM
    in_group = set(np.flatnonzero(cells.group == group).tolist())
    for token in in_group.intersection(kept):
        y0, x0, y1, x1 = _scaled(cells.box[token], scale)
        out[y0:y1, x0:x1] = picture[y0:y1, x0:x1]
    tile = Image.fromarray(out.round().astype(np.uint8))
    pen = ImageDraw.Draw(tile)
    absorbing = {r for j, r in enumerate(merged) if r >= 0 and r != j}  # representatives with members
    for token in sorted(in_group):
        representative = merged[token] if merged else -1
        if representative not in absorbing:
            continue
        y0, x0, y1, x1 = _scaled(cells.box[token], scale)
        width_px = 3 if token == representative else 1
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), outline=PALETTE[representative % len(PALETTE)], width=width_px)
    for _, y0, x0, y1, x1 in evidence:
        pen.rectangle((round(x0 * scale), round(y0 * scale), round(x1 * scale) - 1, round(y1 * scale) - 1),
                      outline=EVIDENCE, width=2)
    return tile


def caption_lines(stats: Any, sample: int, title: str) -> list[str]:
    """Title, tokens in/out per stage for this sample, and what entered the LLM."""
    lines = [title] if title else []
    for record in stats.stages:
        where = record.stage if record.layer is None else f"{record.stage} @ layer {record.layer}"
        lines.append(f"{record.method} ({where}): {record.tokens_before[sample]} -> {record.tokens_after[sample]} tokens")
    total = stats.visual_tokens[sample]
    kept = len(stats.kept_indices[sample])
    lines.append(f"{kept} of {total} visual tokens enter the LLM ({kept / max(total, 1):.0%})")
    return lines


def _selected_groups(stats: Any, sample: int, cells: TokenCells) -> set[int]:
    if not stats.selected_frames:
        return set()
    return {frame // cells.frames_per_group for frame in stats.selected_frames[sample]}


def _check_frames(frames: np.ndarray, cells: TokenCells) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] < cells.num_groups * cells.frames_per_group:
        raise ValueError(f"{frames.shape[0]} frames given, the token grid covers "
                         f"{cells.num_groups * cells.frames_per_group}")


def _scaled(box: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = (int(round(float(v) * scale)) for v in box)
    return y0, x0, y1, x1
