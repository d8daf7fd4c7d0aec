"""The ``vtc`` command end to end on a saved tiny checkpoint and a real mp4."""
from __future__ import annotations

import json

import pytest

from vtc.cli import main

from .builders import tiny, video, write_mp4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    tm = tiny("qwen2_5_vl")
    tm.model.save_pretrained(path)
    tm.processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(path, video(16), fps=4)
    return path


def test_run_prints_answer_and_stats_and_writes_json(checkpoint, clip, tmp_path, capsys) -> None:
    out = tmp_path / "run.json"
    code = main(["run", str(clip), "What moves?", "--model", str(checkpoint), "--method", "dtd",
                 "--retain", "0.25", "--num-frames", "8", "--max-new-tokens", "4", "--compare", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "answer:" in printed and "dtd" in printed and "prefill:" in printed
    record = json.loads(out.read_text())
    stats = record["stats"]
    assert stats["visual_tokens"] == [64] and stats["tokens_kept"] == [16]
    assert record["frames"] == [0, 2, 4, 6, 9, 11, 13, 15]
    assert set(record["prefill_ms"]) == {"uncompressed", "compressed"}


def test_run_clamps_a_request_for_more_frames_than_exist(checkpoint, clip, tmp_path) -> None:
    out = tmp_path / "run.json"
    assert main(["run", str(clip), "Q?", "--model", str(checkpoint), "--method", "random:0.5",
                 "--num-frames", "40", "--max-new-tokens", "2", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["clamped"] is True and len(record["frames"]) == 16


def test_hub_id_model_fails_with_an_offline_message(clip, capsys) -> None:
    assert main(["run", str(clip), "Q?", "--model", "Qwen/Qwen2.5-VL-7B-Instruct"]) == 2
    assert "offline" in capsys.readouterr().err


def test_missing_video_is_reported(checkpoint, tmp_path, capsys) -> None:
    assert main(["run", str(tmp_path / "nope.mp4"), "Q?", "--model", str(checkpoint)]) == 2
    assert "nope.mp4" in capsys.readouterr().err


def test_list_shows_methods_and_families(capsys) -> None:
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert "fastv" in printed and "qwen2_5_vl" in printed


def test_run_samples_the_shipped_model_as_it_was_trained(tmp_path, capsys) -> None:
    """Without --num-frames/--fps the shipped model gets its 16 training frames (1 fps gave it 4 of a
    4-second clip, and it answered wrong), and the processor's pixel-cap choice is explicit."""
    from transformers import AutoProcessor

    from vtc.runner import default_model_path
    from vtc.synth import make_dataset
    from vtc.synth.model import build_processor, build_tokenizer, question_text

    data = make_dataset(tmp_path / "synth", seed=7, count=2, progress=False)
    item = json.loads((data / "data.jsonl").read_text().splitlines()[1])
    out = tmp_path / "run.json"
    assert main(["run", str(data / item["video"]), question_text(item), "--method", "random:1.0",
                 "--max-new-tokens", "4", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["frames"] == list(range(16))
    assert record["answer"] == item["answer_text"]
    for processor in (AutoProcessor.from_pretrained(default_model_path()), build_processor(build_tokenizer())):
        assert processor.video_processor.cap_pixels_per_frame is True
        assert processor.video_processor.num_frames == 16


@pytest.mark.parametrize("frames", [1, 2])
@pytest.mark.parametrize("method", ["keyframes", "keyclips(relevance=novelty)", "query", "scenes", "uniform-frames", "fps"])
def test_run_selects_from_one_and_two_frame_videos(checkpoint, tmp_path, capsys, method: str, frames: int) -> None:
    short = tmp_path / "short.mp4"
    write_mp4(short, video(frames), fps=4)
    assert main(["run", str(short), "Q?", "--model", str(checkpoint), "--method", method, "--retain", "0.5",
                 "--num-frames", str(frames), "--max-new-tokens", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"frames kept by the select stage (source indices): {list(range(frames))}" in printed


def test_run_reports_damaged_frames_in_the_stats_and_json(checkpoint, tmp_path, capsys) -> None:
    from .builders import damage_mp4

    damaged, out = tmp_path / "damaged.mp4", tmp_path / "run.json"
    write_mp4(damaged, video(16), fps=4)
    damage_mp4(damaged, first=5, count=4)
    assert main(["run", str(damaged), "Q?", "--model", str(checkpoint), "--method", "dtd", "--retain", "0.5",
                 "--num-frames", "16", "--max-new-tokens", "2", "--json", str(out)]) == 0
    assert "note: video: " in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["damaged_frames"]
    assert any(f"{len(record['damaged_frames'])} damaged frame(s)" in n for n in record["stats"]["notes"])


def test_run_refuses_a_still_image(checkpoint, tmp_path, capsys) -> None:
    from PIL import Image

    picture = tmp_path / "frame.png"
    Image.fromarray(video(1)[0]).save(picture)
    assert main(["run", str(picture), "Q?", "--model", str(checkpoint)]) == 2
    assert "still image" in capsys.readouterr().err
