"""Same-cell lookups across frames (vtc.cells), shared by DTD and the trained scorer."""
from __future__ import annotations

import torch

from vtc.cells import cell_means, relative_time, same_cell_rows
from vtc.tokens import VisualTokens

GRID = (4, 2, 3)  # frames, height, width


def _row(t: int, h: int, w: int) -> int:
    return (t * GRID[1] + h) * GRID[2] + w


def test_neighbours_on_a_full_grid_are_the_same_cell_one_frame_away() -> None:
    tokens = VisualTokens.from_grid(torch.randn(24, 5), GRID)
    earlier, later = same_cell_rows(tokens, -1), same_cell_rows(tokens, 1)
    for t in range(4):
        for h in range(2):
            for w in range(3):
                assert earlier[_row(t, h, w)] == (_row(t - 1, h, w) if t > 0 else -1)
                assert later[_row(t, h, w)] == (_row(t + 1, h, w) if t < 3 else -1)
    assert same_cell_rows(tokens, 2)[_row(1, 1, 2)] == _row(3, 1, 2)
    assert same_cell_rows(tokens, -2)[_row(1, 1, 2)] == -1


def test_neighbours_skip_absent_frames_and_miss_absent_cells() -> None:
    full = VisualTokens.from_grid(torch.randn(24, 5), GRID)
    keep = torch.tensor([r for r in range(24) if r // 6 != 1 and r != _row(2, 0, 0)])  # frame 1 and one cell gone
    tokens = full.subset(keep)
    position = {int(s): i for i, s in enumerate(tokens.source)}
    earlier, later = same_cell_rows(tokens, -1), same_cell_rows(tokens, 1)
    assert earlier[position[_row(2, 1, 1)]] == position[_row(0, 1, 1)]  # frame 0 is the previous frame present
    assert later[position[_row(0, 1, 1)]] == position[_row(2, 1, 1)]
    assert later[position[_row(0, 0, 0)]] == -1  # that cell is missing in the next frame present
    assert earlier[position[_row(3, 0, 0)]] == -1


def test_cell_means_average_every_frame_of_a_cell() -> None:
    features = torch.randn(24, 5, dtype=torch.float64)
    tokens = VisualTokens.from_grid(features, GRID)
    means = cell_means(features, tokens)
    for h in range(2):
        for w in range(3):
            expected = features[[_row(t, h, w) for t in range(4)]].mean(0)
            for t in range(4):
                torch.testing.assert_close(means[_row(t, h, w)], expected)


def test_relative_time_runs_from_zero_to_one_over_the_frames_present() -> None:
    tokens = VisualTokens.from_grid(torch.randn(24, 5), GRID)
    expected = torch.tensor([t / 3 for t in range(4) for _ in range(6)])
    torch.testing.assert_close(relative_time(tokens), expected)
    single = VisualTokens.from_grid(torch.randn(6, 5), (1, 2, 3))
    assert relative_time(single).tolist() == [0.0] * 6
