"""The reference model's trainer: a mixed-tier fine-tune interrupted after a checkpoint and resumed ends
with exactly the weights of an uninterrupted run, and an existing run is never overwritten silently."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtc.runner import default_model_path
from vtc.synth.train import RESUME_DIR, Trainer, TrainConfig, item_probabilities, parse_type_weights


class Interrupted(Exception):
    pass


@pytest.fixture
def config() -> TrainConfig:
    return TrainConfig(seed=3, train_items=8, scale_train_items=4, eval_items=6, steps=4, eval_every=2, batch_size=2,
                       scale_batch_size=1, warmup=1, threads=1, init=str(default_model_path()), scale_share=0.5)


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path: Path, config: TrainConfig, monkeypatch) -> None:
    cache = tmp_path / "data"
    log = Trainer(config, cache).train(tmp_path / "whole")
    assert {r["tier"] for r in log} == {"fast", "scale"}  # the schedule mixes both tiers
    assert set(log[-1]["held_out"]) >= {"overall", "by_type", "scale"}

    save = Trainer.save_checkpoint

    def save_then_stop(self, checkpoints, steps_done, *args):
        save(self, checkpoints, steps_done, *args)
        raise Interrupted

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        Trainer(config, cache).train(tmp_path / "split")
    monkeypatch.undo()
    assert (tmp_path / "split" / "step-00002").is_dir() and not (tmp_path / "split" / "step-00004").exists()
    with pytest.raises(ValueError, match="--resume"):
        Trainer(config, cache).train(tmp_path / "split")
    resumed_log = Trainer(config, cache).train(tmp_path / "split", resume=True)

    assert [r["tier"] for r in resumed_log] == [r["tier"] for r in log]
    whole, split = _weights(tmp_path / "whole" / RESUME_DIR), _weights(tmp_path / "split" / RESUME_DIR)
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.equal(whole[name], split[name]), name
    start = _weights(Path(config.init))
    assert any(not torch.equal(start[name], whole[name]) for name in whole)  # training moved the weights


def test_resume_refuses_other_settings(tmp_path: Path, config: TrainConfig) -> None:
    config.steps = 2
    Trainer(config, tmp_path / "data").train(tmp_path / "run")
    config.scale_share = 0.25
    with pytest.raises(ValueError, match="scale_share"):
        Trainer(config, tmp_path / "data").train(tmp_path / "run", resume=True)


def test_resume_accepts_another_thread_count(tmp_path: Path, config: TrainConfig) -> None:
    config.steps = 2
    log = Trainer(config, tmp_path / "data").train(tmp_path / "run")
    config.threads = 2  # float summation order only, not the recipe
    assert Trainer(config, tmp_path / "data").train(tmp_path / "run", resume=True) == log


def test_scale_type_weights_draw_a_type_more_often() -> None:
    items = [{"type": t} for t in ("count", "order", "count", "needle")]
    p = item_probabilities(items, parse_type_weights("count=3"))
    assert p.tolist() == [3 / 8, 1 / 8, 3 / 8, 1 / 8]
    assert parse_type_weights("") == {}
    for bad in ("counts=3", "count", "count=0"):
        with pytest.raises(ValueError, match="count"):
            parse_type_weights(bad)
