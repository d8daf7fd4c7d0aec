"""The vLLM plugin's hand-over of a selection from the positions call to the feature call (no vLLM needed)."""
from __future__ import annotations

import pytest
import torch

from vtc.integrations.vllm.reuse import SelectionCache

KEY = ((8, 4, 4), 0.5)


def _video(seed: int, rows: int = 512) -> torch.Tensor:
    return torch.rand(rows, 1176, generator=torch.Generator().manual_seed(seed))


def _selection(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((3, 8), float(seed)), torch.tensor([seed, seed + 1, seed + 2])


def test_the_same_pixels_in_a_batch_find_their_selection_once() -> None:
    cache = SelectionCache()
    videos = [_video(s) for s in range(3)]
    for seed, video in enumerate(videos):
        cache.put(video, KEY, *_selection(seed))
    batch = torch.cat(videos[::-1])  # the feature call sees slices of one batched tensor, in another order
    for seed, part in zip((2, 1, 0), batch.split(512)):
        features, source = cache.take(part, KEY)
        assert torch.equal(features, _selection(seed)[0]) and torch.equal(source, _selection(seed)[1])
    assert (cache.hits, cache.misses, len(cache)) == (3, 0, 0)
    assert cache.take(videos[0], KEY) is None, "taken once: a second feature call encodes again"
    assert cache.misses == 1


@pytest.mark.parametrize("change", ["one value", "the time step", "the grid"])
def test_a_different_video_is_not_mistaken_for_a_cached_one(change: str) -> None:
    cache = SelectionCache()
    video = _video(0)
    cache.put(video, KEY, *_selection(0))
    other, key = video.clone(), KEY
    if change == "one value":
        other[7, 13] += 1e-6  # off the 64-value sample: only the full comparison tells them apart
    elif change == "the time step":
        key = (KEY[0], 1.0)
    else:
        key = ((4, 8, 4), KEY[1])
    assert cache.take(other, key) is None
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)


def test_entries_nobody_takes_leave_after_capacity_newer_ones() -> None:
    cache = SelectionCache(capacity=2)
    videos = [_video(s) for s in range(3)]
    for seed, video in enumerate(videos):
        cache.put(video, KEY, *_selection(seed))
    assert len(cache) == 2
    assert cache.take(videos[0], KEY) is None
    assert cache.take(videos[2], KEY) is not None


def test_the_positions_call_remembers_and_the_feature_call_selects_again_only_on_a_miss() -> None:
    cache = SelectionCache()
    calls = []

    def select(pixels, key):
        calls.append(key)
        return _selection(len(calls))

    video = _video(0)
    remembered = cache.remember(video, KEY, select)
    taken = cache.selection(video, KEY, select)
    assert len(calls) == 1 and torch.equal(taken[1], remembered[1]), "the feature call takes the remembered selection"
    again = cache.selection(video, KEY, select)
    assert len(calls) == 2 and torch.equal(again[1], _selection(2)[1]), "taken once: a second call selects again"
