"""Video decoding with real timestamps.

Token-compression methods and VLM processors need more than a stack of frames:
they need to know *where in time* each frame sits (to build timestamp prompts
and temporal position ids) and how the frames were sampled. This module decodes
a local video with decord (fast random access) and falls back to PyAV (more
robust across containers), and returns the frames together with their source
indices, timestamps and enough metadata to build a
``transformers.video_utils.VideoMetadata``.

Errors are typed (:class:`VideoNotFoundError`, :class:`CorruptVideoError`,
:class:`EmptyVideoError`, all subclasses of :class:`VideoError`) and every
message says what went wrong and what to do about it. A path that is not a
``str``/``os.PathLike`` is a ``TypeError``; a still image (PNG, JPEG, a one-frame
GIF, ...) is refused as not a video rather than read as a one-frame clip.

Damage the decoder can conceal (bytes overwritten inside the stream) is not an
error: the frames still decode, so the video loads, but the frames the decoder
flagged are listed in :attr:`DecodedVideo.damaged_frames` and logged as a warning,
so no caller answers about a damaged video without being told.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream
    from transformers.video_utils import VideoMetadata

logger = logging.getLogger("vtc")

BACKENDS: tuple[str, ...] = ("decord", "pyav")
"""Decoding backends in the order ``backend="auto"`` tries them."""

DEFAULT_FPS = 1.0
"""Sampling rate used when neither ``num_frames`` nor ``fps`` is given."""

_PIP_NAMES = {"decord": "decord", "pyav": "av"}
_DECORD_BATCH = 16
_MAX_ERROR_CHARS = 300
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".gif"}
)


class VideoError(ValueError):
    """Base class for every video-loading failure, so callers can catch one type."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The path does not exist; also a FileNotFoundError so generic handlers still work."""


class CorruptVideoError(VideoError):
    """The file exists but is not a decodable video: no backend could decode it, or it is a still image."""


class EmptyVideoError(VideoError):
    """The file is empty (0 bytes) or a readable container that holds no video frames."""


@dataclass
class DecodedVideo:
    """Sampled frames plus where they came from, so downstream code never guesses timing.

    ``timestamps`` are seconds since the first frame of the video stream (taken from
    the container's presentation timestamps, or ``index / source_fps`` when the
    container has none).

    ``damaged_frames`` are the source indices, up to the last sampled frame, that the
    decoder flagged as damaged (errors it concealed, or a packet it rejected just
    before): empty for a clean video. A frame predicted from a damaged one may show
    the damage too without being flagged, up to the next keyframe. Only damage the
    decoder notices is listed: garbage that still parses as a valid bitstream (H.264
    has no checksums) decodes to wrong pixels without any flag.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    source_fps: float
    total_frames: int
    backend: str
    requested_frames: int | None
    clamped: bool
    damaged_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def duration(self) -> float:
        """Length of the whole source video in seconds (``total_frames / source_fps``)."""
        return self.total_frames / self.source_fps

    def metadata(self) -> VideoMetadata:
        """Describe the sampling as transformers' ``VideoMetadata``, which video processors accept."""
        from transformers.video_utils import VideoMetadata

        return VideoMetadata(
            total_num_frames=self.total_frames,
            fps=self.source_fps,
            width=int(self.frames.shape[2]),
            height=int(self.frames.shape[1]),
            duration=self.duration,
            video_backend=self.backend,
            frames_indices=[int(i) for i in self.indices],
        )


def _check_sampling_args(num_frames: int | None, fps: float | None) -> None:
    """Reject ambiguous or impossible sampling requests before any decoding work."""
    if num_frames is not None and fps is not None:
        raise ValueError(
            f"Got both num_frames={num_frames} and fps={fps}; pass only one of them "
            "(num_frames for a fixed frame count, fps for a fixed sampling rate)."
        )
    whole = isinstance(num_frames, (int, np.integer)) and not isinstance(num_frames, bool)
    if num_frames is not None and not whole:
        raise ValueError(f"num_frames must be a whole number of frames, got {num_frames!r}.")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be a positive number of frames per second, got {fps}.")


def sample_indices(
    total_frames: int,
    source_fps: float,
    num_frames: int | None = None,
    fps: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Choose which source frames to decode, evenly spread over the whole video.

    Exactly one of ``num_frames`` / ``fps`` must be given.

    * ``num_frames``: ``round(linspace(0, total_frames - 1, num_frames))``, the rule most
      VLM loaders use, so the first and last frames are always included.
    * ``fps``: one frame every ``source_fps / fps`` source frames starting at frame 0,
      and always at least one frame.

    Returns ``(indices, clamped)``: sorted unique int64 indices, and ``clamped=True``
    when more frames were requested than the video has (``num_frames > total_frames``
    or ``fps > source_fps``), in which case every frame is returned instead of failing.
    """
    if num_frames is None and fps is None:
        raise ValueError("Pass one of num_frames or fps to choose how frames are sampled.")
    _check_sampling_args(num_frames, fps)
    if total_frames < 1:
        raise ValueError(f"total_frames must be at least 1 to sample from, got {total_frames}.")
    all_frames = np.arange(total_frames, dtype=np.int64)
    if num_frames is not None:
        if num_frames >= total_frames:
            return all_frames, num_frames > total_frames
        return np.rint(np.linspace(0, total_frames - 1, num_frames)).astype(np.int64), False
    if not source_fps > 0:
        raise ValueError(
            f"source_fps must be positive to sample by fps, got {source_fps}; sample with num_frames instead."
        )
    step = source_fps / fps
    if step <= 1:
        return all_frames, step < 1
    positions = np.arange(0.0, total_frames, step)
    return np.floor(positions + 1e-6).astype(np.int64), False


def _resolve_path(path: str | os.PathLike) -> str:
    """Return a usable local path, or raise an error that explains why it is not one."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"a video path must be a str or os.PathLike, got {type(path).__name__} ({path!r:.80}); "
            "pass the path of a local video file"
        )
    text = os.fspath(path)
    local = os.path.expanduser(text)
    if os.path.isdir(local):
        raise VideoError(f"'{text}' is a directory, not a video file; pass the path of a video file.")
    if os.path.exists(local):
        return local
    looks_remote = _URL_RE.match(text) is not None or (
        _HUB_ID_RE.match(text) is not None and os.path.splitext(text)[1].lower() not in _VIDEO_SUFFIXES
    )
    if looks_remote:
        raise VideoNotFoundError(
            f"Video file not found: '{text}'. It looks like a URL or Hugging Face Hub id, but vtc works "
            "offline and only reads local files: download the video first and pass its local path."
        )
    raise VideoNotFoundError(
        f"Video file not found: '{text}'. Check the path (relative paths are resolved from '{os.getcwd()}')."
    )


_ANIMATED_IMAGE_DEMUXERS = frozenset({"gif", "apng"})


def _is_image_demuxer(name: str) -> bool:
    """FFmpeg's picture demuxers (``image2`` and ``<codec>_pipe``: png_pipe, jpeg_pipe, webp_pipe, ...)."""
    return name == "image2" or name.endswith("_pipe")


def _still_image(path: str) -> str | None:
    """The codec name when FFmpeg reads ``path`` as a still picture, else None.

    FFmpeg opens a picture as a one-frame 25 fps video, so answering about it would look like
    success. Decided from the container, never the suffix: picture demuxers always hold a still;
    a GIF or APNG is one when it has a single frame. A video container with one frame is a video.
    """
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            still = _is_image_demuxer(container.format.name)
            if not still and container.format.name in _ANIMATED_IMAGE_DEMUXERS:
                frames = (packet for packet in container.demux(stream) if packet.size)
                still = sum(1 for _ in zip(range(2), frames)) == 1
            return stream.codec_context.name if still else None
    except av.FFmpegError:
        return None  # unreadable: the decoding backends name the error


def checked_video_path(path: str | os.PathLike) -> str:
    """The local path of ``path`` once it can only be a video file, else the typed error saying why.

    Shared by :func:`load_video` and ``vtc.VideoProcessor`` so both refuse a wrong type, a missing
    file, a directory, an empty file and a still image with the same errors.
    """
    local = _resolve_path(path)
    if os.path.getsize(local) == 0:
        raise EmptyVideoError(f"'{local}' is an empty file (0 bytes); pass a video file.")
    codec = _still_image(local)
    if codec is not None:
        raise CorruptVideoError(
            f"'{local}' is a still image ({codec}), not a video; pass a video file "
            f"(to use one picture as a clip, encode it first, e.g. `ffmpeg -loop 1 -i '{local}' -t 2 clip.mp4`)."
        )
    return local


def _one_line(exc: BaseException) -> str:
    """Squeeze a backend exception (decord adds multi-line C++ traces) into one short line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _progress(path: str, total: int | None, enabled: bool, action: str) -> tqdm:
    return tqdm(total=total, disable=not enabled, unit="frame", desc=f"{action} {os.path.basename(path)}")


def _no_frames(path: str) -> EmptyVideoError:
    return EmptyVideoError(
        f"'{path}' has a video stream but no decodable frames; pass a video that contains frames."
    )


def _no_stream(path: str) -> EmptyVideoError:
    """The error for a container without any video stream (audio only, metadata only)."""
    return EmptyVideoError(
        f"'{path}' has no video stream (is it an audio-only or metadata-only file?); pass a video file."
    )


def _load_decord(path: str, num_frames: int | None, fps: float | None, progress: bool) -> DecodedVideo:
    """Random-access decode of only the sampled frames with decord."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    total = len(reader)
    if total == 0:
        raise _no_frames(path)
    source_fps = float(reader.get_avg_fps())
    if not source_fps > 0:
        raise VideoError(f"decord reports no frame rate ({source_fps}) for '{path}'.")
    indices, clamped = sample_indices(total, source_fps, num_frames, fps)
    batches, messages = [], DecoderMessages()
    with _progress(path, len(indices), progress, "Decoding") as bar:
        for start in range(0, len(indices), _DECORD_BATCH):
            chunk = indices[start : start + _DECORD_BATCH].tolist()
            with messages.capture():
                batch = reader.get_batch(chunk)
            batches.append(batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch))
            bar.update(len(chunk))
    get_timestamps: Callable[[list[int]], np.ndarray] | None = getattr(reader, "get_frame_timestamp", None)
    if get_timestamps is None:
        timestamps = indices / source_fps
    else:
        starts = np.asarray(get_timestamps(indices.tolist()), dtype=np.float64)[:, 0]
        origin = float(np.asarray(get_timestamps([0]), dtype=np.float64)[0, 0])
        timestamps = starts - origin
    return DecodedVideo(
        frames=np.ascontiguousarray(np.concatenate(batches), dtype=np.uint8),
        timestamps=timestamps,
        indices=indices,
        source_fps=source_fps,
        total_frames=total,
        backend="decord",
        requested_frames=num_frames,
        clamped=clamped,
        damaged_frames=damage_after_decord(path, int(indices[-1]), messages),
    )


def _pyav_header_frame_count(stream: VideoStream) -> int:
    """Frame count stored in the container header; 0 when the container does not record it."""
    return int(stream.frames or 0)


def _pyav_fps(stream: VideoStream, path: str) -> float:
    """Nominal frame rate, preferring the measured average over codec guesses."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise VideoError(f"PyAV finds no frame rate for the video stream of '{path}'.")


def _pyav_decode(container: InputContainer, stream: VideoStream) -> Iterator[tuple[VideoFrame, bool]]:
    """Every frame FFmpeg can decode, with whether it is damaged.

    Damaged: the decoder flagged it corrupt (it concealed errors in its data), or it follows a
    packet the decoder rejected (that packet's frame is lost). Skipping a rejected packet instead
    of failing keeps the rest of a video with one bad span readable; the damage is reported.
    """
    import av

    lost = False
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            lost = True
            continue
        for frame in frames:
            yield frame, lost or bool(frame.is_corrupt)
            lost = False


def _pyav_open_stream(container: InputContainer) -> VideoStream:
    """The first video stream, decoded with FFmpeg's own threads."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


@dataclass
class DecoderMessages:
    """What FFmpeg inside decord printed during the decoding calls wrapped in ``capture``.

    decord conceals decoding errors and reports them nowhere but the process's stderr (file
    descriptor 2, below Python's ``sys.stderr``), so during each call the descriptor points at a
    temporary file. Only the decoding call is wrapped (a progress bar drawn between calls is not
    caught); what was caught is printed again afterwards, so no message is lost.
    """

    text: str = ""

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        sys.stderr.flush()
        with tempfile.TemporaryFile() as sink:
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                caught = sink.read().decode(errors="replace")
        if caught:
            self.text += caught
            sys.stderr.write(caught)
            sys.stderr.flush()


def damage_after_decord(path: str, last: int, messages: DecoderMessages) -> np.ndarray:
    """Damaged source indices ``0..last`` of a decord read: located with PyAV only when decord's FFmpeg
    printed something while decoding (a clean video is not decoded twice). Errors printed that PyAV
    cannot place on a frame are still logged as a warning."""
    if not messages.text:
        return np.zeros(0, dtype=np.int64)
    damaged = damaged_frames(path, last)
    if not len(damaged):
        first = messages.text.strip().splitlines()[0]
        logger.warning("the decoder reported errors while decoding '%s' (%s); answers about it may be wrong.",
                       path, first)
    return damaged


def damaged_frames(path: str, last: int) -> np.ndarray:
    """Source indices ``0..last`` that the decoder flags as damaged, by decoding once with PyAV,
    which exposes FFmpeg's per-frame flags (decord only prints FFmpeg's messages)."""
    import av

    damaged: list[int] = []
    with av.open(path) as container:
        stream = _pyav_open_stream(container)
        for position, (_, bad) in enumerate(_pyav_decode(container, stream)):
            if bad:
                damaged.append(position)
            if position >= last:
                break
    return np.asarray(damaged, dtype=np.int64)


def _pyav_count_frames(path: str, progress: bool) -> int:
    """Count frames by decoding once (containers such as MKV/WebM/TS do not store a count)."""
    import av

    count = 0
    with av.open(path) as container, _progress(path, None, progress, "Counting frames in") as bar:
        for _ in _pyav_decode(container, _pyav_open_stream(container)):
            count += 1
            bar.update(1)
    return count


def _pyav_pick(
    path: str, indices: np.ndarray, source_fps: float, progress: bool
) -> tuple[list[np.ndarray], list[float], int, list[int]]:
    """Decode sequentially, converting only the wanted frames so memory stays bounded.

    Returns the kept frames, their timestamps, how many frames were decoded and which of them
    were damaged; stops right after the last wanted index.
    """
    import av

    wanted = indices.tolist()
    frames: list[np.ndarray] = []
    timestamps: list[float] = []
    damaged: list[int] = []
    decoded = 0
    origin: float | None = None
    with av.open(path) as container, _progress(path, wanted[-1] + 1, progress, "Decoding") as bar:
        for frame, bad in _pyav_decode(container, _pyav_open_stream(container)):
            position = decoded
            decoded += 1
            bar.update(1)
            if bad:
                damaged.append(position)
            if position == 0:
                origin = frame.time
            if position != wanted[len(frames)]:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if frame.time is not None and origin is not None:
                timestamps.append(float(frame.time - origin))
            else:
                timestamps.append(position / source_fps)
            if len(frames) == len(wanted):
                break
    return frames, timestamps, decoded, damaged


def _load_pyav(path: str, num_frames: int | None, fps: float | None, progress: bool) -> DecodedVideo:
    """Sequential decode with PyAV; slower than decord but reads more containers."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise _no_stream(path)
        stream = container.streams.video[0]
        source_fps = _pyav_fps(stream, path)
        total = _pyav_header_frame_count(stream)
    if total <= 0:
        total = _pyav_count_frames(path, progress)
    if total == 0:
        raise _no_frames(path)
    indices, clamped = sample_indices(total, source_fps, num_frames, fps)
    frames, timestamps, decoded, damaged = _pyav_pick(path, indices, source_fps, progress)
    if len(frames) < len(indices):
        if decoded == 0:
            raise _no_frames(path)
        logger.warning(
            "'%s' claims %d frames but only %d decode; resampling from the %d real frames.",
            path, total, decoded, decoded,
        )
        total = decoded
        indices, clamped = sample_indices(total, source_fps, num_frames, fps)
        frames, timestamps, decoded, damaged = _pyav_pick(path, indices, source_fps, progress)
    return DecodedVideo(
        frames=np.stack(frames),
        timestamps=np.asarray(timestamps, dtype=np.float64),
        indices=indices,
        source_fps=source_fps,
        total_frames=total,
        backend="pyav",
        requested_frames=num_frames,
        clamped=clamped,
        damaged_frames=np.asarray(damaged, dtype=np.int64),
    )


def damage_note(damaged: np.ndarray) -> str:
    """One line for stats and logs: how many frames the decoder flagged and which."""
    shown = ", ".join(str(int(i)) for i in damaged[:10]) + (", ..." if len(damaged) > 10 else "")
    return (
        f"{len(damaged)} damaged frame(s) (source indices {shown}): the decoder hit errors in the stream "
        "there, so these frames and the ones predicted from them may show garbage"
    )


def _warn_damaged(local: str, damaged: np.ndarray) -> None:
    logger.warning("'%s' has %s; answers about this video may be wrong.", local, damage_note(damaged))


_LOADERS: dict[str, Callable[[str, int | None, float | None, bool], DecodedVideo]] = {
    "decord": _load_decord,
    "pyav": _load_pyav,
}


def load_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    fps: float | None = None,
    backend: str = "auto",
    progress: bool = False,
) -> DecodedVideo:
    """Decode a local video into sampled RGB frames with their real timestamps.

    Sampling (see :func:`sample_indices`): pass ``num_frames`` for a fixed number of
    evenly spaced frames, or ``fps`` for a fixed rate; with neither, frames are
    sampled at ``DEFAULT_FPS`` (1 frame per second). Asking for more frames than the
    video has returns every frame with ``clamped=True`` and a warning on the ``vtc``
    logger instead of failing.

    ``backend="auto"`` tries decord first (fast seeking) and falls back to PyAV
    (handles more containers); ``"decord"`` or ``"pyav"`` forces one. ``progress=True``
    shows a tqdm bar over decoded frames, useful for long videos.

    Raises :class:`VideoNotFoundError` (no such file), :class:`EmptyVideoError`
    (0 bytes, or readable but no frames), :class:`CorruptVideoError` (no backend could
    decode it, or a still image), ``TypeError`` for a path that is not a ``str`` or
    ``os.PathLike``, and ``ValueError`` for invalid arguments.

    Damage the decoder concealed is a warning, not an error: the frames decode, one bad span
    should not make a long video unusable, and the caller decides (``damaged_frames`` lists the
    flagged source frames and the ``vtc`` logger warns). ``vtc run`` prints and records it.
    """
    _check_sampling_args(num_frames, fps)
    if backend != "auto" and backend not in BACKENDS:
        choices = ", ".join(repr(name) for name in ("auto", *BACKENDS))
        raise ValueError(f"Unknown backend {backend!r}; choose one of {choices}.")
    if num_frames is None and fps is None:
        fps = DEFAULT_FPS
    local = checked_video_path(path)
    order = BACKENDS if backend == "auto" else (backend,)
    errors: dict[str, str] = {}
    missing: list[str] = []
    empty: EmptyVideoError | None = None
    for name in order:
        try:
            video = _LOADERS[name](local, num_frames, fps, progress)
        except EmptyVideoError as exc:
            empty = exc
            errors[name] = str(exc)
        except ImportError as exc:
            missing.append(name)
            errors[name] = f"not installed ({exc})"
        except Exception as exc:  # backends raise RuntimeError, DECORDError, av.FFmpegError, ...
            errors[name] = _one_line(exc)
        else:
            if errors:
                failures = "; ".join(f"{other}: {error}" for other, error in errors.items())
                logger.info("Read '%s' with %s after %s.", local, name, failures)
            if len(video.damaged_frames):
                _warn_damaged(local, video.damaged_frames)
            if video.clamped:
                wanted = f"{num_frames} frames" if num_frames is not None else f"fps={fps}"
                logger.warning(
                    "Requested %s but '%s' has only %d frames at %.3g fps; returning all %d frames.",
                    wanted, local, video.total_frames, video.source_fps, video.total_frames,
                )
            return video
        logger.debug("%s could not read '%s': %s", name, local, errors[name])
    if empty is not None:
        raise empty
    if len(missing) == len(order):
        packages = " ".join(_PIP_NAMES[name] for name in missing)
        raise VideoError(
            f"Cannot read '{local}': the video backend {' / '.join(missing)} is not installed; "
            f"install it with `pip install {packages}`."
        )
    others = [b for b in BACKENDS if b not in order]
    raise _undecodable(local, errors, retry=f", or try backend={others[0]!r}" if others else "")


def _undecodable(local: str, errors: dict[str, str], retry: str = "") -> CorruptVideoError:
    """The error for a file no backend could decode, naming each backend's reason and what to try."""
    details = "; ".join(f"{name}: {error}" for name, error in errors.items())
    return CorruptVideoError(
        f"Could not decode '{local}' ({details}). The file may be corrupt, truncated or not a video: "
        f"check that it plays (e.g. `ffprobe '{local}'`) or re-encode it "
        f"(e.g. `ffmpeg -i in -c:v libx264 -pix_fmt yuv420p out.mp4`){retry}."
    )


def decord_failure(local: str, exc: BaseException) -> VideoError:
    """The typed error :func:`load_video` would give for a file decord failed on (for decord-only readers).

    decord fails on a container without a video stream, or with a stream but no frames, much as it
    fails on a broken file, so PyAV tells those cases (:class:`EmptyVideoError`) apart from a file
    that does not decode (:class:`CorruptVideoError`).
    """
    import av

    errors = {"decord": _one_line(exc)}
    try:
        with av.open(local) as container:
            if not container.streams.video:
                return _no_stream(local)
        if _pyav_count_frames(local, progress=False) == 0:
            return _no_frames(local)
    except av.FFmpegError as pyav_exc:
        errors["pyav"] = _one_line(pyav_exc)
    return _undecodable(local, errors)
