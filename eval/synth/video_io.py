"""Deterministic mp4 writing (PyAV/libx264) and decoding with PyAV or decord."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Single-threaded encoders with fixed settings: identical frames give byte-identical files
# (threaded x264 may split slices/lookahead differently from run to run). One GOP per video
# and no B-frames keep decoding simple and identical across PyAV and decord. mpeg4 is the
# fallback for FFmpeg builds without libx264.
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
_OPTIONS = {
    "libx264": {"crf": "16", "preset": "medium", "threads": "1", "bf": "0"},
    "mpeg4": {"threads": "1", "bf": "0", "b": "2M"},
}


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range yuv420p planes stacked as [H * 3 / 2, W], chroma averaged over
    2x2 blocks. Done in numpy because converting rgb24 frames with swscale was not
    reproducible: identical frames occasionally encoded to different files."""
    rgb = frame.astype(np.float64)
    y = 16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255
    cb = 128 + rgb @ np.array([-37.797, -74.203, 112.0]) / 255
    cr = 128 + rgb @ np.array([112.0, -93.786, -18.214]) / 255
    h, w = y.shape

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean((1, 3)).ravel()

    planes = np.concatenate([y.ravel(), half(cb), half(cr)]).reshape(h * 3 // 2, w)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, codec: str = CODEC) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) as yuv420p in an mp4."""
    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        stream.codec_context.gop_size = t
        stream.options = dict(_OPTIONS[codec])
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")))
        container.mux(stream.encode())


def read_video(path: str | Path, backend: str = "pyav") -> np.ndarray:
    """Decode every frame to uint8 RGB [T, H, W, 3] with ``backend`` "pyav" or "decord"."""
    if backend == "pyav":
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if backend == "decord":
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return reader.get_batch(list(range(len(reader)))).asnumpy()
    raise ValueError(f"unknown backend {backend!r}")
