"""What the test suites import: tiny models of every registered family (tests/families/), clips and mp4s.

A family's tiny builder lives in ``tests/families/<adapter file>.py`` and registers itself; the
family lists below follow from the registry.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtc.engine import cache_kwarg

from .families import BUILDERS, Tiny
from .families.base import video

FAMILIES = tuple(BUILDERS)
# Families whose language model uses 1D RoPE (position ids may reach it as None).
ROPE_1D_FAMILIES = tuple(f for f, b in BUILDERS.items() if b.rope_1d)
# Families whose processor stacks videos into one [videos, frames, C, H, W] tensor: a batch needs equal frame counts.
STACKED_VIDEO_FAMILIES = tuple(f for f, b in BUILDERS.items() if b.stacked_videos)


def cache_arg(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Pass a KV cache under the name this transformers version takes (``cache`` from 5.24 on)."""
    return {cache_kwarg(model): cache}


def fresh(family: str, seed: int = 0) -> Tiny:
    """A newly built tiny model + processor of ``family`` (weights from ``seed``)."""
    if family not in BUILDERS:
        raise ValueError(f"no tiny builder for {family!r}; registered: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    built = BUILDERS[family].build()
    built.model.eval()
    return built


@lru_cache(maxsize=None)
def tiny(family: str, seed: int = 0) -> Tiny:
    """A cached tiny model + processor; callers must not leave it wrapped (tests unwrap in finally)."""
    return fresh(family, seed)


def _stages(family: str) -> tuple[str, ...]:
    from vtc.patches import ADAPTERS
    from vtc.support import supported_stages

    (adapter,) = [a for a in ADAPTERS if family in a.model_types]
    return supported_stages(adapter)


def unsupported_stages(family: str, spec: str) -> list[str]:
    """Stages of ``spec`` that vtc refuses on ``family`` (the suites check the refusal instead)."""
    import vtc

    from vtc.patches import ADAPTERS
    from vtc.support import runs_on

    (adapter,) = [a for a in ADAPTERS if family in a.model_types]
    return [s.method.stage for s in vtc.Pipeline.parse(spec).steps if not runs_on(adapter, type(s.method))]


def families_with(stage: str) -> tuple[str, ...]:
    """The test families whose adapter can hook ``stage``."""
    return tuple(f for f in FAMILIES if stage in _stages(f))


def write_mp4(path, frames: np.ndarray, fps: int = 4) -> None:
    """Encode [T, H, W, 3] uint8 frames as an H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def damage_mp4(path, first: int, count: int, seed: int = 0) -> None:
    """Overwrite the middle half of ``count`` NAL units of an mp4 from ``first`` on with random bytes.

    The 4-byte length before each NAL unit stays, so demuxers and decoders still walk the stream and
    decode every frame, concealing the errors: the damage FFmpeg prints to stderr and otherwise hides.
    """
    data = bytearray(Path(path).read_bytes())
    box = data.find(b"mdat")
    end, position, units = box - 4 + int.from_bytes(data[box - 4 : box], "big"), box + 4, []
    while position + 4 <= end:
        length = int.from_bytes(data[position : position + 4], "big")
        units.append((position + 4, length))
        position += 4 + length
    rng = np.random.default_rng(seed)
    for start, length in units[first : first + count]:
        lo, hi = start + 1 + length // 4, start + 1 + 3 * length // 4
        data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
