"""Cheap decoding for selection: low-resolution candidates for scoring, then only the chosen frames in full.

A one-hour video at 1 fps is 3600 frames; holding them at full resolution would take gigabytes.
Candidates are decoded by decord at ``size`` x ``size`` pixels in batches (decord scales while it
decodes), so scoring memory grows with the candidate count times a thumbnail, never a full frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..video import DecoderMessages, checked_video_path, damage_after_decord, decord_failure, sample_indices

_BATCH = 64


@dataclass
class Candidates:
    """Low-resolution candidate frames of one video with where they came from."""

    path: str
    thumbs: np.ndarray  # [F, size, size, 3] uint8
    indices: np.ndarray  # [F] source frame indices
    times: np.ndarray  # [F] seconds since the first frame
    keyframe: np.ndarray  # [F] bool: the container marks this frame as a keyframe
    source_fps: float
    total_frames: int
    height: int
    width: int
    damaged: np.ndarray  # source indices up to the last candidate that the decoder flagged as damaged


def _reader(path: str, **kwargs):
    """decord's reader of ``path``; a file decord cannot open gets the typed error ``load_video`` gives."""
    try:
        import decord
    except ImportError as err:
        raise ImportError("frame selection decodes with decord: `pip install decord`") from err
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), **kwargs)
    except Exception as exc:  # DECORDError, RuntimeError, or an AssertionError for a stream without frames
        raise decord_failure(path, exc) from None


def decode_candidates(path: str | os.PathLike, fps: float, size: int = 32, progress: bool = False) -> Candidates:
    """Candidates sampled at ``fps`` (every frame if the video is slower), decoded at ``size`` x ``size``.

    Refuses what ``load_video`` refuses, with the same typed errors (``vtc.video.VideoError``), and
    records damaged frames as it does.
    """
    local = checked_video_path(path)
    full = _reader(local)
    total, source_fps = len(full), float(full.get_avg_fps())
    height, width = full[0].shape[:2]
    keys = np.zeros(total, dtype=bool)
    keys[np.asarray(full.get_key_indices(), dtype=np.int64)] = True
    origin = float(full.get_frame_timestamp([0])[0, 0])
    del full
    indices, _ = sample_indices(total, source_fps, fps=fps)
    small = _reader(local, width=size, height=size)
    thumbs = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    times = np.empty(len(indices), dtype=np.float64)
    messages = DecoderMessages()
    with tqdm(total=len(indices), disable=not progress, unit="frame", desc=f"Scoring {os.path.basename(local)}") as bar:
        for start in range(0, len(indices), _BATCH):
            chunk = indices[start : start + _BATCH].tolist()
            try:
                with messages.capture():
                    thumbs[start : start + len(chunk)] = small.get_batch(chunk).asnumpy()
            except Exception as exc:  # a stream that opens but stops decoding part-way
                raise decord_failure(local, exc) from None
            times[start : start + len(chunk)] = np.asarray(small.get_frame_timestamp(chunk))[:, 0] - origin
            bar.update(len(chunk))
    damaged = damage_after_decord(local, int(indices[-1]), messages)
    return Candidates(local, thumbs, indices, times, keys[indices], source_fps, total, int(height), int(width), damaged)


def decode_frames(path: str, indices: list[int], height: int, width: int) -> np.ndarray:
    """The chosen source frames, decoded and resized to (height, width) by decord."""
    reader = _reader(path, width=width, height=height)
    parts = [reader.get_batch(indices[i : i + _BATCH]).asnumpy() for i in range(0, len(indices), _BATCH)]
    return np.concatenate(parts)


def units(candidates: Candidates, temporal_patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group candidates into units of ``temporal_patch`` frames (the last padded by repeating its final frame).

    Returns thumbs [U, S, C, h, w] in [0, 1], times [U], indices [U, S], keyframe [U].
    """
    count = len(candidates.indices)
    pad = (-count) % temporal_patch
    order = np.concatenate([np.arange(count), np.full(pad, count - 1)])
    thumbs = torch.from_numpy(candidates.thumbs[order]).permute(0, 3, 1, 2).float().div(255.0)
    thumbs = thumbs.view(-1, temporal_patch, *thumbs.shape[1:])
    indices = torch.from_numpy(candidates.indices[order]).view(-1, temporal_patch)
    times = torch.from_numpy(candidates.times[order]).view(-1, temporal_patch)[:, 0].float()
    keyframe = torch.from_numpy(candidates.keyframe[order]).view(-1, temporal_patch).any(dim=1)
    return thumbs, times, indices, keyframe
