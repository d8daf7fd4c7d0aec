"""Row bookkeeping shared by the engine and the select stage."""
from __future__ import annotations

import torch

from vtc.sequence import text_after_video


def test_text_after_video_is_the_rows_after_the_last_visual_row_without_padding() -> None:
    embeds = torch.arange(8.0)[:, None]
    visual = torch.tensor([False, False, True, True, False, True, False, False])
    assert text_after_video(embeds, visual).flatten().tolist() == [6.0, 7.0]
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0])
    assert text_after_video(embeds, visual, mask).flatten().tolist() == [6.0]
    ends_with_video = torch.tensor([False] * 6 + [True, True])
    assert text_after_video(embeds, ends_with_video).numel() == 0
