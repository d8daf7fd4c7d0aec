"""The local-file VideoMME / MVBench tasks: lmms-eval's own prompt and scoring, run offline on local files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lmms_eval import utils as lmms_utils

from vtc.synth import render_item, write_mp4

from .lmms_eval_helpers import REPO

TASKS = REPO / "eval" / "tasks"
UPSTREAM = Path(lmms_utils.__file__).parent / "tasks"
PLAIN_KEYS = ("output_type", "doc_to_target", "generation_kwargs", "test_split")


def _config(path: Path) -> dict:
    return lmms_utils.load_yaml_config(str(path), mode="full")


def _same_function(ours, theirs) -> bool:
    """lmms-eval loads a yaml's relative ``utils`` as a fresh module, so compare the code, not the object."""
    return (ours.__code__.co_filename, ours.__code__.co_name) == (theirs.__code__.co_filename, theirs.__code__.co_name)


@pytest.mark.parametrize("ours, theirs", [
    ("vtc_videomme/vtc_videomme.yaml", "videomme/videomme.yaml"),
    ("vtc_mvbench/vtc_mvbench_action_count.yaml", "mvbench/mvbench_action_count.yaml"),
])
def test_local_variants_use_lmms_eval_prompt_scoring_and_settings(ours: str, theirs: str) -> None:
    mine, upstream = _config(TASKS / ours), _config(UPSTREAM / theirs)
    for key in ("doc_to_text", "process_results"):
        assert _same_function(mine[key], upstream[key]), key
    assert _same_function(mine["metric_list"][0]["aggregation"], upstream["metric_list"][0]["aggregation"])
    assert [m["metric"] for m in mine["metric_list"]] == [m["metric"] for m in upstream["metric_list"]]
    for key in PLAIN_KEYS:
        assert mine.get(key) == upstream.get(key), key
    prompts = {k: v for k, v in mine["lmms_eval_specific_kwargs"]["default"].items() if k != "video_dir"}
    assert prompts == upstream["lmms_eval_specific_kwargs"]["default"]


def test_local_mvbench_group_has_every_upstream_subtask() -> None:
    ours = yaml.safe_load((TASKS / "vtc_mvbench" / "vtc_mvbench.yaml").read_text())["task"]
    theirs = yaml.safe_load((UPSTREAM / "mvbench" / "mvbench.yaml").read_text())["task"]
    assert ours == [f"vtc_{name}" for name in theirs]
    for name in ours:
        assert _config(TASKS / "vtc_mvbench" / f"{name}.yaml")["task"] == name


@pytest.fixture(scope="module")
def local_data(tmp_path_factory):
    """Two Video-MME items and two MVBench action_count items with real mp4s, in the official layouts."""
    import datasets

    root = tmp_path_factory.mktemp("local")
    frames, _ = render_item(7, "needle")
    (root / "videomme" / "data").mkdir(parents=True)
    (root / "mvbench" / "video" / "perception" / "videos").mkdir(parents=True)
    (root / "mvbench" / "json").mkdir(parents=True)
    rows = []
    for i in range(2):
        write_mp4(root / "videomme" / "data" / f"vid{i}.mp4", frames, 4.0)
        write_mp4(root / "mvbench" / "video" / "perception" / "videos" / f"clip{i}.mp4", frames, 4.0)
        rows.append({"videoID": f"vid{i}", "question_id": f"{i}-1", "duration": "short", "domain": "Knowledge",
                     "sub_category": "Humanity & History", "task_type": "Counting Problem",
                     "question": "How many objects flash?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
                     "answer": "A"})
    datasets.Dataset.from_list(rows).to_parquet(str(root / "videomme" / "test.parquet"))
    (root / "mvbench" / "json" / "action_count.json").write_text(json.dumps([
        {"video": f"clip{i}.mp4", "question": "How many times?", "candidates": ["1", "2", "3"], "answer": "2"}
        for i in range(2)
    ]))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "videomme_local.yaml").write_text(yaml.safe_dump({
        "include": str(TASKS / "vtc_videomme" / "vtc_videomme.yaml"), "task": "vtc_videomme_test",
        "dataset_kwargs": {"data_files": {"test": str(root / "videomme" / "test.parquet")}},
        "lmms_eval_specific_kwargs": {"default": {
            "pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly.",
            "video_dir": str(root / "videomme" / "data")}},
    }))
    (tasks / "mvbench_local.yaml").write_text(yaml.safe_dump({
        "include": str(TASKS / "vtc_mvbench" / "vtc_mvbench_action_count.yaml"), "task": "vtc_mvbench_test",
        "dataset_kwargs": {"data_files": {"train": str(root / "mvbench" / "json" / "action_count.json")}},
        "lmms_eval_specific_kwargs": {"default": {
            "sub_task": "action_count", "post_prompt": "Only give the best option.\n",
            "video_dir": str(root / "mvbench" / "video")}},
    }))
    return root


def test_local_videomme_and_mvbench_run_offline_through_lmms_eval(local_data) -> None:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from vtc.integrations.lmms_models import VtcModel

    lm = VtcModel(method="dtd", retain=0.5, device="cpu")
    out = simple_evaluate(model=lm, tasks=["vtc_videomme_test", "vtc_mvbench_test"], log_samples=False,
                          bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(local_data / "tasks"), include_defaults=False))
    assert "videomme_perception_score,none" in out["results"]["vtc_videomme_test"]
    assert "mvbench_accuracy,none" in out["results"]["vtc_mvbench_test"]
    assert sorted((r.key["task"], r.key["doc_id"]) for r in lm.vtc_records) == [
        ("vtc_mvbench_test", 0), ("vtc_mvbench_test", 1), ("vtc_videomme_test", 0), ("vtc_videomme_test", 1)]
    assert all(r.tokens_kept == r.visual_tokens // 2 for r in lm.vtc_records)


def test_missing_local_video_names_the_file(local_data) -> None:
    from importlib import util

    spec = util.spec_from_file_location("videomme_local_utils", TASKS / "vtc_videomme" / "utils.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(FileNotFoundError, match="no video gone"):
        module.doc_to_visual({"videoID": "gone"}, {"video_dir": str(local_data / "videomme" / "data")})
