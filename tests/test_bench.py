"""``vtc bench`` and the lmms-eval plugin, run for real and offline on the shipped reference model."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

import vtc
from vtc.bench.report import series
from vtc.bench.run import run_suite
from vtc.bench.suite import load_suite
from vtc.budget import Budget
from vtc.cli import main
from vtc.runner import default_model_path, load_model
from vtc.synth import make_dataset
from vtc.synth.evaluate import evaluate

from .lmms_eval_helpers import suite_file, synth_task

CELLS = ["baseline", "dtd @ 0.5", "dtd @ 0.25", "fastv @ 0.5", "fastv @ 0.25"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = make_dataset(root / "synth", seed=3, count=6, progress=False)
    return root, data, synth_task(root / "tasks", data)


@pytest.fixture(scope="module")
def sweep(synth):
    root, _, task = synth
    path = suite_file(root / "suite.yaml", task.parent)
    assert main(["bench", str(path), "--quiet"]) == 0
    return load_suite(path)


def test_entry_point_registers_the_vtc_models() -> None:
    from lmms_eval.models import get_model

    from vtc.integrations.lmms_models import VtcModel, VtcQwen2_5_VL, VtcQwen3_VL

    assert get_model("vtc") is VtcModel
    assert get_model("vtc_qwen2_5_vl") is VtcQwen2_5_VL and not VtcQwen2_5_VL.is_simple
    assert get_model("vtc_qwen3_vl") is VtcQwen3_VL


def test_sweep_writes_every_cell_to_json_table_and_plot(sweep) -> None:
    results = json.loads(sweep.output.with_suffix(".json").read_text())
    assert [c["name"] for c in results["cells"]] == CELLS
    for cell in results["cells"]:
        assert cell["samples"] == 6 and cell["scores"]["vtc_synth_test"]["n"] == 6
        expected = Budget(retain=cell["retain"]).count(128) if cell["method"] else 128
        assert cell["visual_tokens"] == 128 and cell["tokens_kept"] == expected
        assert cell["prefill_ms"] > 0
    table = sweep.output.with_suffix(".md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| cell")]
    assert [row.split(" | ")[0][2:] for row in rows] == CELLS
    panels = series(results)
    assert set(panels) == {"vtc_synth_test", "speed-up"}
    for panel in panels.values():
        assert sorted(panel) == ["baseline", "dtd", "fastv"]
        assert len(panel["dtd"]) == len(panel["fastv"]) == 2
    with Image.open(sweep.output.with_suffix(".png")) as image:
        assert image.format == "PNG" and image.width > 400


def test_bench_scores_equal_vtc_synth_evaluation_of_the_same_items(synth, sweep) -> None:
    """The harness adds nothing: lmms-eval's accuracy per cell is vtc.synth's on the same batch."""
    _, data, _ = synth
    results = {c["name"]: c for c in json.loads(sweep.output.with_suffix(".json").read_text())["cells"]}
    model, processor = load_model(default_model_path(), device="cpu")
    direct = evaluate(data, model, processor, batch_size=6, progress=False, max_new_tokens=4)
    assert results["baseline"]["scores"]["vtc_synth_test"]["value"] == pytest.approx(direct["overall"])
    with vtc.compressed(model, "dtd", retain=0.25):
        direct = evaluate(data, model, processor, batch_size=6, progress=False, max_new_tokens=4)
    assert results["dtd @ 0.25"]["scores"]["vtc_synth_test"]["value"] == pytest.approx(direct["overall"])


def test_finished_cells_are_skipped_and_new_ones_run(synth, sweep, monkeypatch) -> None:
    import vtc.bench.run as bench_run

    def no_model(suite):
        raise AssertionError("a finished sweep must not load the model")

    monkeypatch.setattr(bench_run, "_load_model", no_model)
    results = run_suite(sweep, progress=False)
    assert [c["name"] for c in results["cells"]] == CELLS
    with pytest.raises(ValueError, match="different suite"):
        run_suite(load_suite(suite_file(sweep.path, sweep.include_path[0], limit=3)), progress=False)
    suite_file(sweep.path, sweep.include_path[0])


def test_suite_typo_unknown_method_and_unknown_task_fail_clearly(synth, tmp_path, capsys) -> None:
    root, _, task = synth
    bad = suite_file(tmp_path / "typo.yaml", task.parent)
    bad.write_text(bad.read_text().replace("budgets:", "budget:"))
    assert main(["bench", str(bad)]) == 2
    assert "unknown key 'budget'; did you mean 'budgets'?" in capsys.readouterr().err
    assert main(["bench", str(suite_file(tmp_path / "m.yaml", task.parent, methods=["dtdd"]))]) == 2
    assert "unknown method 'dtdd'; known methods: " in capsys.readouterr().err
    assert main(["bench", str(suite_file(tmp_path / "t.yaml", task.parent, tasks=["vtc_synth_tset"]))]) == 2
    assert "unknown task 'vtc_synth_tset'; did you mean vtc_synth_test" in capsys.readouterr().err


def test_yaml_syntax_error_and_unknown_model_args_key_name_the_suite_file(synth, tmp_path, capsys) -> None:
    _, _, task = synth
    broken = suite_file(tmp_path / "broken.yaml", task.parent)
    broken.write_text(broken.read_text() + "methods: [dtd\n")
    assert main(["bench", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: not valid YAML" in err and f'in "{broken}", line' in err
    typo = suite_file(tmp_path / "args.yaml", task.parent, model_args={"num_frame": 16})
    assert main(["bench", str(typo)]) == 2
    assert "model_args: vtc takes no argument 'num_frame'; did you mean 'num_frames'?" in capsys.readouterr().err
    chat = suite_file(tmp_path / "chat.yaml", task.parent, model="vtc_qwen2_5_vl", model_args={"max_pixel": 1})
    assert main(["bench", str(chat)]) == 2
    assert "did you mean 'max_pixels'?" in capsys.readouterr().err
    sized = suite_file(tmp_path / "batch.yaml", task.parent, model_args={"batch_size": 2})
    assert main(["bench", str(sized)]) == 2
    assert "the suite's 'batch_size' key" in capsys.readouterr().err


def test_a_suite_without_include_path_finds_the_installed_tasks(tmp_path) -> None:
    """A wheel user has no eval/tasks folder: vtc bench indexes the tasks installed with the package."""
    from vtc.bench.run import _task_manager
    from vtc.bench.suite import default_synth_dir
    from vtc.tasks import TASKS_DIR

    path = suite_file(tmp_path / "suite.yaml", tmp_path, tasks=["vtc_synth"], include_path=[],
                      synth_data={"seed": 1, "count": 2})
    suite = load_suite(path)
    assert suite.synth_data["dir"] == default_synth_dir() == TASKS_DIR / "vtc_synth" / "data"
    assert "vtc_synth" in _task_manager(suite).all_tasks


def test_missing_videos_fail_the_bench_before_the_model_loads(synth, tmp_path, capsys, monkeypatch) -> None:
    import vtc.bench.run as bench_run

    def no_model(suite):
        raise AssertionError("missing data must be reported before the model loads")

    monkeypatch.setattr(bench_run, "_load_model", no_model)
    _, data, _ = synth
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(data / "data.jsonl", broken / "data.jsonl")
    tasks = tmp_path / "tasks"
    synth_task(tasks, broken)
    suite = suite_file(tmp_path / "suite.yaml", tasks, methods=["dtd"], budgets=[0.5])
    assert main(["bench", str(suite), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "vtc_synth: video" in err and str(broken / "videos" / "000000.mp4") in err
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_unknown_method_in_model_args_names_the_known_ones() -> None:
    from vtc.integrations.lmms_models import VtcModel

    with pytest.raises(KeyError, match="unknown method 'nosuch'; known methods: .*dtd"):
        VtcModel.create_from_arg_string("method=nosuch,device=cpu")


def test_lmms_eval_cli_runs_the_vtc_model_and_writes_the_side_file(synth, tmp_path) -> None:
    _, _, task = synth
    stats = tmp_path / "stats.jsonl"
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "vtc", "--tasks", "vtc_synth_test",
        "--model_args", f"method='dtd(absolute=false,mode=feature)',retain=0.5,device=cpu,stats_file={stats}",
        "--include_path", str(task.parent), "--limit", "2", "--output_path", str(tmp_path / "out"),
        "--verbosity", "DEBUG",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "out").rglob("*_results.json"))
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    assert sorted(r["key"]["doc_id"] for r in records) == [0, 1]
    assert all(r["tokens_kept"] == 64 and r["compression"]["method"].startswith("dtd(") for r in records)


def test_qwen_chat_subclass_keeps_its_pipeline_and_records_each_doc(synth) -> None:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from vtc.integrations.lmms_models import VtcQwen2_5_VL

    _, _, task = synth
    lm = VtcQwen2_5_VL(method="dtd", retain=0.25, device="cpu", device_map="cpu", min_pixels=56 * 56,
                       max_pixels=112 * 112, max_num_frames=16)
    assert lm.model.dtype == torch.bfloat16  # the parent's loading, untouched
    out = simple_evaluate(model=lm, tasks=["vtc_synth_test"], limit=3, log_samples=False, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(task.parent), include_defaults=False))
    assert out["n-samples"]["vtc_synth_test"]["effective"] == 3
    assert sorted(r.key["doc_id"] for r in lm.vtc_records) == [0, 1, 2]
    for record in lm.vtc_records:
        assert record.visual_tokens == 128 and record.tokens_kept == Budget(retain=0.25).count(128)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"limit": 0}, "'limit' must be an integer >= 1, got 0"),
        ({"batch_size": True}, "'batch_size' must be an integer >= 1, got True"),
        ({"synth_data": {"seed": -1, "count": 2}}, "'seed' must be an integer >= 0, got -1"),
        ({"synth_data": {"seed": 1, "count": 2.5}}, "'count' must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_counts_in_a_suite_name_the_file_and_the_key(tmp_path, overrides: dict, message: str) -> None:
    path = suite_file(tmp_path / "counts.yaml", tmp_path, **overrides)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        load_suite(path)
