"""`vllm serve` with the plugin: a video chat request over the OpenAI-compatible HTTP API on localhost, and
start-up refusals of a bad configuration (the servers are started and stopped here; about 3 minutes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vtc.integrations.vllm.config import parse
from vtc.runner import build_inputs, default_model_path
from vtc.synth import load_dataset
from vtc.synth.model import parse_answer, question_text
from vtc.video import load_video

from eval.vllm_server import FRAMES, chat_about_video, run_until_exit, running_server

from .helpers import split

# The reference model was trained with transformers' positions (README "Serving with vLLM"); vidcom2 at 50%
# scores 0.990 through the plugin on the 96-item split (eval/results/vllm.md).
CONFIG = {"method": "vidcom2", "retain": 0.5, "positions": "transformers"}
ITEMS = 3


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[tuple[Path, dict]]:
    data = split(str(tmp_path_factory.mktemp("serve_split")))
    return [(data / item["video"], item) for item in load_dataset(data)[:ITEMS]]


@pytest.fixture(scope="module")
def plain_replies(items, tmp_path_factory) -> list[dict]:
    with running_server(None, tmp_path_factory.mktemp("plain") / "server.log") as url:
        return [chat_about_video(url, video, question_text(item)) for video, item in items]


@pytest.fixture(scope="module")
def vtc_replies(items, tmp_path_factory) -> list[dict]:
    with running_server(CONFIG, tmp_path_factory.mktemp("vtc") / "server.log") as url:
        return [chat_about_video(url, video, question_text(item)) for video, item in items]


def _video_tokens(video: Path, question: str) -> tuple[int, tuple[int, int, int]]:
    """The uncompressed prompt's length and the video's merged token grid, from transformers' processor
    on the same frames (independent of vLLM)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(default_model_path()))
    inputs = build_inputs(processor, [load_video(video, num_frames=FRAMES)], [question])
    t, h, w = (int(v) for v in inputs["video_grid_thw"][0])
    merge = processor.video_processor.merge_size
    return int(inputs["input_ids"].shape[1]), (t, h // merge, w // merge)


def test_served_prompt_shrinks_by_exactly_what_the_method_drops(items, plain_replies, vtc_replies) -> None:
    config = parse(CONFIG)
    for (video, item), plain, compressed in zip(items, plain_replies, vtc_replies):
        length, grid = _video_tokens(video, question_text(item))
        full = grid[0] * grid[1] * grid[2]
        assert plain["usage"]["prompt_tokens"] == length, "plain vLLM's server prompt is transformers' prompt"
        dropped = full - config.kept_count(grid)
        assert dropped > 0
        assert compressed["usage"]["prompt_tokens"] == length - dropped


def test_served_answers_are_the_items_answers(items, vtc_replies) -> None:
    for (_, item), reply in zip(items, vtc_replies):
        text = reply["choices"][0]["message"]["content"].strip()
        assert parse_answer(text, item["options"]) == item["answer"], f"{item['type']}: {text!r}"


@pytest.mark.parametrize("bad, message", [
    ({"method": "nope", "retain": 0.25}, "unknown method"),
    ({"method": "dtd(threshold=0.5)"}, "placeholder run"),
])
def test_bad_config_stops_the_server_at_startup_naming_the_problem(bad, message, tmp_path) -> None:
    log = tmp_path / "server.log"
    assert run_until_exit(bad, log) != 0
    output = log.read_text()
    assert "vtc: " in output and message in output, output[-4000:]
