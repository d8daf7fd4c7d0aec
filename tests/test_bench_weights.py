"""A sweep's fingerprint covers the model's weights: a checkpoint retrained in place is a different suite."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vtc.bench import weights
from vtc.bench.suite import load_suite
from vtc.bench.weights import weights_digest
from vtc.runner import default_model_path

from .lmms_eval_helpers import suite_file


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_model_path(), tmp_path / "model"))


def test_a_checkpoint_retrained_in_place_changes_the_suite_fingerprint(checkpoint: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    suite = load_suite(suite_file(tmp_path / "suite.yaml", tasks, model_args={"pretrained": str(checkpoint)}))
    before = suite.fingerprint()
    assert suite.fingerprint() == before  # deterministic
    flip_byte(checkpoint / "model.safetensors", -1)
    assert suite.fingerprint() != before


def test_the_weights_come_from_pretrained_or_the_models_default(checkpoint: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    assert load_suite(suite_file(tmp_path / "a.yaml", tasks)).checkpoint() == default_model_path()
    chosen = suite_file(tmp_path / "b.yaml", tasks, model="vtc_qwen3_vl", model_args={"pretrained": str(checkpoint)})
    assert load_suite(chosen).checkpoint() == checkpoint
    assert load_suite(suite_file(tmp_path / "c.yaml", tasks, model="vtc_qwen3_vl", model_args={})).checkpoint() is None


def test_large_files_are_sampled_and_a_change_at_a_sample_is_seen(checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(weights, "WHOLE_FILE_LIMIT", 0)
    monkeypatch.setattr(weights, "SAMPLES", 4)
    monkeypatch.setattr(weights, "CHUNK", 1024)
    path = checkpoint / "model.safetensors"
    size = path.stat().st_size
    before = weights_digest(checkpoint)
    flip_byte(path, (size - 1024) * 2 // 3 + 10)  # inside the third of four sampled chunks
    assert weights_digest(checkpoint) != before


def test_a_folder_without_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds no weight files"):
        weights_digest(tmp_path)
