"""Tests for vtc.video: sampling, both decoding backends, timestamps and error types."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest

from vtc import video
from vtc.video import (
    CorruptVideoError,
    DecodedVideo,
    EmptyVideoError,
    VideoError,
    VideoNotFoundError,
    load_video,
    sample_indices,
)

N_FRAMES = 24
WIDTH, HEIGHT = 64, 48
FPS = 8
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def frame_pattern(i: int) -> np.ndarray:
    """Frame i: red and green levels encode i, blue is a horizontal gradient."""
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[..., 0] = 10 * i
    img[..., 1] = 255 - 10 * i
    img[..., 2] = np.linspace(0, 255, WIDTH).astype(np.uint8)[None, :]
    return img


def write_video(path: Path, n_frames: int = N_FRAMES, codec: str = CODEC) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()
        for i in range(n_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_pattern(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_frame_ids(frames: np.ndarray) -> list[int]:
    """Recover which source frame each decoded frame is from its red level."""
    return [int(round(float(f[..., 0].mean()) / 10)) for f in frames]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_backend_returns_requested_frames_with_real_timestamps_and_pixels(mp4: Path, backend: str) -> None:
    result = load_video(mp4, num_frames=6, backend=backend)
    assert isinstance(result, DecodedVideo)
    assert result.backend == backend
    assert result.frames.shape == (6, HEIGHT, WIDTH, 3)
    assert result.frames.dtype == np.uint8
    assert result.indices.tolist() == [0, 5, 9, 14, 18, 23]
    np.testing.assert_allclose(result.timestamps, result.indices / FPS, atol=1e-3)
    assert decoded_frame_ids(result.frames) == result.indices.tolist()
    for frame, index in zip(result.frames, result.indices):
        assert np.abs(frame.astype(float) - frame_pattern(int(index))).mean() < 6
    assert result.total_frames == N_FRAMES
    assert result.source_fps == pytest.approx(FPS)
    assert result.duration == pytest.approx(N_FRAMES / FPS)
    assert result.requested_frames == 6
    assert not result.clamped


@pytest.mark.parametrize("sampling", [{"num_frames": 7}, {"fps": 3.0}, {"num_frames": 100}])
def test_decord_and_pyav_agree(mp4: Path, sampling: dict[str, float]) -> None:
    by_decord = load_video(mp4, backend="decord", **sampling)
    by_pyav = load_video(mp4, backend="pyav", **sampling)
    np.testing.assert_array_equal(by_decord.indices, by_pyav.indices)
    assert by_decord.frames.shape == by_pyav.frames.shape
    np.testing.assert_allclose(by_decord.timestamps, by_pyav.timestamps, atol=1e-3)
    assert np.abs(by_decord.frames.astype(float) - by_pyav.frames.astype(float)).mean() < 3
    assert by_decord.total_frames == by_pyav.total_frames == N_FRAMES
    assert by_decord.clamped == by_pyav.clamped


def test_auto_backend_prefers_decord(mp4: Path) -> None:
    assert load_video(mp4, num_frames=2).backend == "decord"


@pytest.mark.parametrize("num_frames", [1, 2, 5, 8, 23])
def test_num_frames_sampling_is_even_sorted_and_spans_the_video(num_frames: int) -> None:
    indices, clamped = sample_indices(N_FRAMES, FPS, num_frames=num_frames)
    assert not clamped
    assert len(indices) == num_frames
    assert indices.dtype == np.int64
    assert np.all(np.diff(indices) > 0)
    assert indices[0] == 0
    if num_frames > 1:
        assert indices[-1] == N_FRAMES - 1
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(1.0, [0, 8, 16]), (2.0, [0, 4, 8, 12, 16, 20]), (3.0, [0, 2, 5, 8, 10, 13, 16, 18, 21]), (0.1, [0])],
)
def test_fps_sampling_takes_one_frame_every_source_fps_over_fps(fps: float, expected: list[int]) -> None:
    indices, clamped = sample_indices(N_FRAMES, FPS, fps=fps)
    assert indices.tolist() == expected
    assert not clamped


def test_default_sampling_is_one_frame_per_second(mp4: Path) -> None:
    result = load_video(mp4, backend="pyav")
    assert result.indices.tolist() == [0, 8, 16]
    assert result.requested_frames is None
    np.testing.assert_allclose(result.timestamps, [0.0, 1.0, 2.0], atol=1e-3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("sampling", [{"num_frames": 100}, {"fps": 30.0}])
def test_requesting_more_frames_than_exist_returns_all_and_warns(
    mp4: Path, backend: str, sampling: dict[str, float], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vtc"):
        result = load_video(mp4, backend=backend, **sampling)
    assert result.clamped
    assert result.indices.tolist() == list(range(N_FRAMES))
    assert decoded_frame_ids(result.frames) == list(range(N_FRAMES))
    assert result.requested_frames == sampling.get("num_frames")
    warnings = [r for r in caplog.records if r.name == "vtc" and r.levelno == logging.WARNING]
    assert any("returning all 24" in r.message for r in warnings)


def test_missing_file_raises_not_found_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFoundError) as info:
        load_video(missing)
    assert str(missing) in str(info.value)
    assert "offline" not in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, VideoError)


@pytest.mark.parametrize("name", ["some-org/some-video-dataset", "https://example.com/clip.mp4"])
def test_hub_id_or_url_gets_offline_hint(name: str) -> None:
    with pytest.raises(VideoNotFoundError, match="offline") as info:
        load_video(name)
    assert name in str(info.value)
    assert "local path" in str(info.value)


def test_directory_is_rejected_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="directory"):
        load_video(tmp_path)


def test_random_bytes_raise_corrupt_naming_each_backend(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptVideoError) as info:
        load_video(garbage)
    message = str(info.value)
    assert str(garbage) in message
    assert "decord:" in message and "pyav:" in message
    assert "\n" not in message


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_truncated_mp4_raises_corrupt(mp4: Path, tmp_path: Path, backend: str) -> None:
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(CorruptVideoError, match="truncated"):
        load_video(truncated, backend=backend)


def test_video_stream_without_frames_raises_empty(tmp_path: Path) -> None:
    path = write_video(tmp_path / "empty.avi", n_frames=0, codec="mpeg4")
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
    with pytest.raises(EmptyVideoError, match="no decodable frames") as info:
        load_video(path)
    assert str(path) in str(info.value)


def test_container_without_video_stream_raises_empty(tmp_path: Path) -> None:
    path = write_video(tmp_path / "empty.mp4", n_frames=0)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 0
    with pytest.raises(EmptyVideoError, match="no video stream"):
        load_video(path)


def test_metadata_is_transformers_video_metadata(mp4: Path) -> None:
    from transformers.video_utils import VideoMetadata

    result = load_video(mp4, num_frames=4, backend="pyav")
    meta = result.metadata()
    assert isinstance(meta, VideoMetadata)
    assert meta.frames_indices == result.indices.tolist()
    assert meta.fps == pytest.approx(result.source_fps) and meta.fps == pytest.approx(FPS)
    assert meta.total_num_frames == N_FRAMES
    assert (meta.width, meta.height) == (WIDTH, HEIGHT)
    assert meta.duration == pytest.approx(N_FRAMES / FPS)
    assert meta.video_backend == "pyav"
    np.testing.assert_allclose(meta.timestamps, result.timestamps, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"num_frames": -3},
        {"num_frames": 2.5},
        {"fps": 0.0},
        {"fps": -1.0},
        {"num_frames": 4, "fps": 1.0},
        {},
    ],
)
def test_sample_indices_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        sample_indices(N_FRAMES, FPS, **kwargs)


def test_sample_indices_rejects_empty_video() -> None:
    with pytest.raises(ValueError, match="total_frames"):
        sample_indices(0, FPS, num_frames=4)


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"num_frames": 2, "fps": 1.0}, {"backend": "opencv"}])
def test_load_video_rejects_bad_arguments_before_touching_the_file(
    tmp_path: Path, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError) as info:
        load_video(tmp_path / "does-not-matter.mp4", **kwargs)
    assert not isinstance(info.value, VideoError)


def test_pyav_counts_frames_when_container_stores_no_count(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mkv")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    result = load_video(path, num_frames=4, backend="pyav")
    assert result.total_frames == N_FRAMES
    assert result.indices.tolist() == [0, 8, 15, 23]
    assert decoded_frame_ids(result.frames) == [0, 8, 15, 23]


def test_pyav_resamples_when_header_overstates_frame_count(
    mp4: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(video, "_pyav_header_frame_count", lambda stream: 40)
    with caplog.at_level(logging.WARNING, logger="vtc"):
        result = load_video(mp4, num_frames=5, backend="pyav")
    assert result.total_frames == N_FRAMES
    assert result.indices.tolist() == [0, 6, 12, 17, 23]
    assert decoded_frame_ids(result.frames) == [0, 6, 12, 17, 23]
    assert "claims 40 frames" in caplog.text


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_progress_bar_reports_decoded_frames(
    mp4: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load_video(mp4, num_frames=3, backend=backend, progress=True)
    assert "frame" in capsys.readouterr().err


def test_accepts_pathlike_and_str(mp4: Path) -> None:
    by_path = load_video(mp4, num_frames=3, backend="pyav")
    by_str = load_video(os.fspath(mp4), num_frames=3, backend="pyav")
    np.testing.assert_array_equal(by_path.frames, by_str.frames)


def test_decord_torch_bridge_still_yields_numpy_frames(mp4: Path) -> None:
    decord = pytest.importorskip("decord")
    decord.bridge.set_bridge("torch")
    try:
        result = load_video(mp4, num_frames=3, backend="decord")
    finally:
        decord.bridge.set_bridge("native")
    assert isinstance(result.frames, np.ndarray)
    assert decoded_frame_ids(result.frames) == [0, 12, 23]


# -- inputs that are not (clean) videos ------------------------------------------------------------
@pytest.mark.parametrize("name", ["still.png", "still.jpg", "still.gif"])
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_still_image_is_refused_as_not_a_video(tmp_path: Path, name: str, backend: str) -> None:
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(frame_pattern(3)).save(path)
    with pytest.raises(CorruptVideoError, match="still image") as info:
        load_video(path, backend=backend)
    assert str(path) in str(info.value)


def test_animated_gif_and_one_frame_mp4_are_videos(tmp_path: Path) -> None:
    from PIL import Image

    gif = tmp_path / "moving.gif"
    pictures = [Image.fromarray(frame_pattern(i)) for i in range(4)]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=250)
    assert load_video(gif, num_frames=4).total_frames == 4
    single = write_video(tmp_path / "single.mp4", n_frames=1)
    for backend in ("decord", "pyav"):
        result = load_video(single, num_frames=1, backend=backend)
        assert result.total_frames == 1 and decoded_frame_ids(result.frames) == [0]


@pytest.mark.parametrize("path", [None, 3, b"clip.mp4", ["clip.mp4"]])
def test_a_path_that_is_not_str_or_pathlike_is_a_type_error(path: object) -> None:
    with pytest.raises(TypeError, match=f"str or os.PathLike, got {type(path).__name__}"):
        load_video(path)  # type: ignore[arg-type]


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    path.write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty file") as info:
        load_video(path)
    assert str(path) in str(info.value)


def test_clean_video_has_no_damaged_frames(mp4: Path) -> None:
    for backend in ("decord", "pyav"):
        assert load_video(mp4, num_frames=4, backend=backend).damaged_frames.tolist() == []


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_damaged_bytes_mid_stream_are_reported_not_hidden(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from .builders import damage_mp4, video as noisy_video, write_mp4

    path = tmp_path / "damaged.mp4"
    write_mp4(path, noisy_video(16), fps=4)
    damage_mp4(path, first=5, count=4)
    with caplog.at_level(logging.WARNING, logger="vtc"):
        result = load_video(path, num_frames=16, backend=backend)
    assert result.backend == backend and len(result.frames) == 16  # still decodes: a warning, not an error
    damaged = result.damaged_frames.tolist()
    assert damaged and all(0 <= i < 16 for i in damaged)
    assert f"{len(damaged)} damaged frame(s)" in caplog.text and str(path) in caplog.text


def test_damage_before_the_last_sampled_frame_only_counts(tmp_path: Path) -> None:
    from .builders import damage_mp4, video as noisy_video, write_mp4

    path = tmp_path / "damaged.mp4"
    write_mp4(path, noisy_video(16), fps=4)
    damage_mp4(path, first=5, count=4)
    damaged = load_video(path, num_frames=16, backend="pyav").damaged_frames
    assert load_video(path, num_frames=1, backend="decord").damaged_frames.tolist() == []  # frame 0 only
    assert (load_video(path, num_frames=16, backend="decord").damaged_frames == damaged).all()


def test_a_packet_the_decoder_rejects_is_damage_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from .builders import video as noisy_video, write_mp4

    path = tmp_path / "bad-nal.mp4"
    write_mp4(path, noisy_video(16), fps=4)
    data = bytearray(path.read_bytes())
    box = data.find(b"mdat")
    first = box + 4 + 4 + int.from_bytes(data[box + 4 : box + 8], "big")  # the second NAL unit's length
    for _ in range(6):  # walk to the seventh NAL unit, mid-stream
        first += 4 + int.from_bytes(data[first : first + 4], "big")
    data[first : first + 4] = b"\x7f\xff\xff\xff"  # an impossible length: the decoder rejects the packet
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="vtc"):
        result = load_video(path, num_frames=16)
    assert result.backend == "pyav"  # decord gives up on the whole file
    assert result.total_frames == 15 and len(result.damaged_frames) >= 1
    assert "damaged frame(s)" in caplog.text


def test_a_clean_decord_read_is_not_decoded_a_second_time(mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage is located with PyAV only when decord's FFmpeg printed errors: a clean video costs one decode."""
    import vtc.video

    def second_decode(*args, **kwargs):
        raise AssertionError("a clean video was decoded again to look for damage")

    monkeypatch.setattr(vtc.video, "damaged_frames", second_decode)
    assert load_video(mp4, num_frames=4, backend="decord").damaged_frames.tolist() == []
