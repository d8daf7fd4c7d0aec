"""The ``vtc`` command starts without torch and refuses bad arguments (exit 2, ``vtc: error:`` on stderr)
before it loads a model or decodes a video."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vtc.cli import main
from vtc.synth import make_dataset

NO_TORCH = textwrap.dedent("""
    import sys
    from vtc.cli import main

    def code(argv):
        try:
            return main(argv)
        except SystemExit as exit:
            return exit.code

    assert code(["--help"]) == 0 and code(["--version"]) == 0 and code(["list"]) == 0
    for command in ("run", "list", "synth", "bench", "train"):
        assert code([command, "--help"]) == 0
    heavy = sorted(m for m in ("torch", "transformers", "numpy", "av") if m in sys.modules)
    assert not heavy, f"help, version or list imported {heavy}"
    assert code(["run"]) == 2                                   # argparse error
    assert code(["train", "--method", "scorer", "--retain", "0.1", "--data", ".", "--out", "o", "--steps", "0"]) == 2
    assert code(["synth", "make", "--seed", "1", "--count", "-3", "--out", "o"]) == 2
    heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    assert not heavy, f"an argument error imported {heavy}"
""")


def test_help_version_list_and_argument_errors_import_no_torch(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "vtc: error: steps must be an integer >= 1, got 0" in done.stderr
    assert "vtc: error: count must be an integer >= 1, got -3" in done.stderr


def test_import_vtc_loads_the_api_lazily() -> None:
    code = "import sys, vtc; assert 'torch' not in sys.modules; vtc.wrap; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model or decoding a video fails the test: every check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded or a video decoded before the arguments were checked")

    monkeypatch.setattr("vtc.runner.load_model", refuse)
    monkeypatch.setattr("vtc.video.load_video", refuse)


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"never decoded")
    return path


def refused(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtc: error: ") and message in err, err


RUN_ERRORS = [
    (["--retain", "1.5"], "retain must be in (0, 1], got 1.5"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--method", "dtd(threshold=abc)"], "dtd knob 'threshold' expects float or None, got 'abc' (str)"),
    (["--method", "dtd(absolute=1)"], "dtd knob 'absolute' expects bool, got 1 (int)"),
    (["--method", "fastv(layer=2.5)"], "fastv knob 'layer' expects int, got 2.5"),
    (["--method", "dtd:0.5>>fastv"], "has an empty step"),
    (["--method", "dtd:0.5>"], "has an empty step"),
    (["--method", ">dtd"], "has an empty step"),
    (["--method", "random:2.5"], "a token budget must be an integer, got 2.5"),
    (["--method", "random"], "method 'random' needs a budget"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "trained:DIR>fastv@2:0.5"], "composes a trained compressor with other steps"),
    (["--method", "trained:no-such-dir"], "is not a local directory"),
    (["--num-frames", "0"], "--num-frames must be an integer >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
    (["--model", "Qwen/Qwen2.5-VL-7B-Instruct"], "never downloads"),
    (["--no-compression", "--retain", "0.5"], "--retain/--tokens set a compression budget"),
]


@pytest.mark.parametrize(("extra", "message"), RUN_ERRORS, ids=[" ".join(e) for e, _ in RUN_ERRORS])
def test_run_refuses_bad_arguments_before_loading(extra, message, clip, no_model, capsys) -> None:
    refused(["run", str(clip), "Q?", *extra], capsys, message)


def test_run_refuses_cuda_without_a_gpu(clip, no_model, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(["run", str(clip), "Q?", "--device", "cuda"], capsys, "no CUDA GPU is available")


def test_run_refuses_flash_attention_without_its_package(clip, no_model, capsys) -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed")
    refused(["run", str(clip), "Q?", "--attn", "flash_attention_2"], capsys, "needs the flash-attn package")


@pytest.mark.parametrize("flag", [["--dtype", "float8"], ["--attn", "flash"]])
def test_run_unknown_dtype_or_attention_is_an_argparse_error(flag, clip, no_model, capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["run", str(clip), "Q?", *flag])
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_run_checks_the_video_and_the_json_path_first(clip, tmp_path, no_model, capsys) -> None:
    refused(["run", str(tmp_path / "nope.mp4"), "Q?"], capsys, "video")
    refused(["run", str(clip), "Q?", "--json", str(clip / "out.json")], capsys, "is a file, not a directory")
    refused(["run", str(clip), "Q?", "--json", str(tmp_path)], capsys, "is a directory")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "ds", seed=5, count=2, progress=False)


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch-size", "-2"], "--batch-size must be an integer >= 1, got -2"),
    (["--limit", "-1"], "--limit must be an integer >= 1, got -1"),
    (["--limit", "0"], "--limit must be an integer >= 1, got 0"),
    (["--retain", "0.5"], "--retain/--tokens need --method"),
    (["--method", "dtd(threshold=abc)"], "'threshold' expects float or None"),
])
def test_synth_eval_refuses_bad_arguments_before_loading(extra, message, dataset, tmp_path, no_model, capsys) -> None:
    refused(["synth", "eval", str(dataset), "--json", str(tmp_path / "r.json"), *extra], capsys, message)


def test_synth_make_refuses_a_negative_count_and_an_existing_dataset(dataset, tmp_path, capsys) -> None:
    refused(["synth", "make", "--seed", "1", "--count", "-3", "--out", str(tmp_path / "new")], capsys,
            "count must be an integer >= 1, got -3")
    assert not (tmp_path / "new").exists()
    refused(["synth", "make", "--seed", "1", "--count", "1", "--out", str(dataset)], capsys, "pass --overwrite")


def test_synth_make_overwrite_removes_the_old_videos(tmp_path) -> None:
    out = tmp_path / "ds"
    assert main(["synth", "make", "--seed", "1", "--count", "3", "--out", str(out), "--quiet"]) == 0
    assert main(["synth", "make", "--seed", "2", "--count", "1", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["000000.mp4"]
    assert len((out / "data.jsonl").read_text().splitlines()) == 1


TRAIN = ["train", "--method", "scorer", "--retain", "0.1"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--steps", "0"], "steps must be an integer >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--save-every", "0"], "save_every must be an integer >= 1, got 0"),
    (["--lr", "-1"], "lr must be a finite number >= 0"),
    (["--mixed-precision", "fp4"], "unknown mixed precision 'fp4'"),
    (["--eval-items", "0"], "--eval-items must be an integer >= 1"),
])
def test_train_refuses_bad_arguments_before_loading(extra, message, dataset, tmp_path, no_model, capsys) -> None:
    refused([*TRAIN, "--data", str(dataset), "--out", str(tmp_path / "adapter"), *extra], capsys, message)


def test_train_refuses_an_out_that_is_a_file_before_training(dataset, clip, no_model, capsys) -> None:
    refused([*TRAIN, "--data", str(dataset), "--out", str(clip)], capsys, "is a file, not a directory")
    refused([*TRAIN, "--data", str(clip.parent / "missing"), "--out", str(clip.parent / "a")], capsys,
            "is not a local directory")
