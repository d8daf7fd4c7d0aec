"""Trained compressors: budgets, gradients, label alignment, training, save/load and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vtc
from vtc.synth import make_dataset
from vtc.trained import KINDS, build, load_compressor
from vtc.trained.data import load_items, training_batch
from vtc.trained.labels import IGNORE, compact_labels, next_token_loss
from vtc.trained.train import CompressorTrainer, TrainConfig
from vtc.video import load_video

from .builders import fresh

FAMILY = "qwen2_5_vl"


def fresh_tiny():
    """An uncached tiny model: training injects LoRA into it, which must not leak into other tests."""
    return fresh(FAMILY, 0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "train", seed=3, count=6, progress=False)


def trainer(tmp_path: Path, data_dir: Path, method: str = "scorer", **overrides) -> CompressorTrainer:
    tm = fresh_tiny()
    cfg = TrainConfig(**{"method": method, "retain": 0.1, "steps": 3, "batch_size": 3, "lr": 1e-2, "lora_lr": 1e-2,
                         "save_every": 100, **overrides})
    return CompressorTrainer(tm.model, tm.processor, data_dir, cfg, tmp_path / "adapter", progress=False)


def full_batch(tr: CompressorTrainer):
    videos = [load_video(tr.data_dir / it["video"], num_frames=16) for it in tr.items]
    return training_batch(tr.processor, tr.items, videos)


def eval_loss(tr: CompressorTrainer, inputs, labels) -> float:
    tr.compressor.eval()
    with torch.no_grad():
        logits = tr.model(**inputs).logits
    return next_token_loss(logits, compact_labels(labels, tr.engine.prefill_compaction)).item()


def random_tokens(n_frames: int = 8, side: int = 4, dim: int = 64, seed: int = 0) -> vtc.VisualTokens:
    generator = torch.Generator().manual_seed(seed)
    tokens = vtc.VisualTokens.from_grid(torch.randn(n_frames * side * side, dim, generator=generator), (n_frames, side, side))
    tokens.question = torch.randn(5, dim, generator=generator)
    tokens.query = tokens.question.mean(0)
    return tokens


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("training", [False, True])
def test_compressor_meets_its_budget_exactly(kind: str, training: bool) -> None:
    compressor = build(kind, hidden_size=64, retain=0.1).train(training)
    tokens = random_tokens()
    for budget in (vtc.Budget(retain=0.05), vtc.Budget(retain=0.1), vtc.Budget(tokens=1), vtc.Budget(tokens=40),
                   vtc.Budget(retain=1.0), vtc.Budget()):
        selection = compressor.compress(tokens, budget)
        want = (budget if budget.is_set else vtc.Budget(retain=0.1)).count(len(tokens))
        assert selection.keep.numel() == want, (kind, budget)
        assert selection.keep.unique().numel() == want


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_compressor_budget_is_exact_inside_the_model(kind: str) -> None:
    tm = fresh_tiny()
    from .builders import Tiny, video

    inputs = Tiny(FAMILY, tm.model, tm.processor).inputs([video(16), video(8, seed=1)])
    vtc.wrap(tm.model, build(kind, hidden_size=64, retain=0.05).eval())
    with torch.no_grad():
        tm.model(**inputs)
    stats = tm.model.vtc_stats
    assert stats.tokens_kept == [vtc.Budget(retain=0.05).count(n) for n in stats.visual_tokens]


def test_compacted_labels_line_up_with_what_entered_the_llm(tmp_path: Path, data_dir: Path) -> None:
    tr = trainer(tmp_path, data_dir)
    inputs, labels = full_batch(tr)
    seen = {}
    lm = tr.model.model.language_model
    handle = lm.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    try:
        with torch.no_grad():
            tr.model(**inputs)
    finally:
        handle.remove()
    ids_as_labels = compact_labels(inputs["input_ids"], tr.engine.prefill_compaction)
    entered = seen["inputs_embeds"]
    assert entered.shape[1] < inputs["input_ids"].shape[1], "nothing was compressed"
    text = (ids_as_labels != IGNORE) & (ids_as_labels != tr.video_token_id) & seen["attention_mask"].bool()
    assert torch.equal(entered[text], lm.embed_tokens(ids_as_labels[text]))
    reply = compact_labels(labels, tr.engine.prefill_compaction)
    assert torch.equal(reply[reply != IGNORE], labels[labels != IGNORE]), "reply tokens were lost or reordered"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradients_reach_only_the_compressor_and_lora(tmp_path: Path, data_dir: Path, kind: str) -> None:
    tr = trainer(tmp_path, data_dir, kind)
    tr.compressor.train()
    answer, evidence = tr.losses(0)
    (answer + evidence).backward()
    trainable = tr.trainable_parameters()
    assert any(n.startswith("compressor.") for n in trainable) and any("lora_" in n for n in trainable)
    assert all(n.startswith("compressor.") or "lora_" in n for n in trainable)
    for name, param in tr.model.named_parameters():
        if "lora_" not in name:
            assert not param.requires_grad and param.grad is None, name
    compressor_grads = [p.grad for n, p in trainable.items() if n.startswith("compressor.")]
    lora_grads = [p.grad for n, p in trainable.items() if "lora_" in n]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in compressor_grads), "no gradient reached the compressor"
    assert any(g is not None and bool(g.abs().sum() > 0) for g in lora_grads), "no gradient reached LoRA"


def test_every_temporal_cue_and_the_note_of_the_scorer_get_a_gradient(tmp_path: Path, data_dir: Path) -> None:
    tr = trainer(tmp_path, data_dir, "scorer")
    assert tr.compressor.annotate
    tr.compressor.train()
    answer, evidence = tr.losses(0)
    (answer + evidence).backward()
    for layer in ("motion", "ahead", "novelty", "when", "note"):
        assert bool(getattr(tr.compressor, layer).weight.grad.abs().sum() > 0), layer


def test_the_scorer_note_changes_the_kept_features_not_the_selection() -> None:
    torch.manual_seed(0)
    noted = build("scorer", hidden_size=64, retain=0.1).eval()
    plain = build("scorer", hidden_size=64, retain=0.1, annotate=False).eval()
    plain.load_state_dict({k: v for k, v in noted.state_dict().items() if not k.startswith("note.")})
    tokens = random_tokens()
    with torch.no_grad():
        fresh = noted.compress(tokens, vtc.Budget())
        torch.nn.init.normal_(noted.note.weight)
        annotated, pure = noted.compress(tokens, vtc.Budget()), plain.compress(tokens, vtc.Budget())
        notes = noted.scores_and_notes(tokens)[1]
    assert torch.equal(annotated.keep, pure.keep) and torch.equal(fresh.keep, pure.keep)
    kept = tokens.features[pure.keep]
    assert torch.equal(fresh.features, kept), "a zero note must leave the kept features as they are"
    assert torch.equal(annotated.features, kept + notes[pure.keep]) and not torch.equal(annotated.features, kept)
    assert pure.features is None, "without the note the scorer only selects"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_few_steps_reduce_the_loss(tmp_path: Path, data_dir: Path, kind: str) -> None:
    tr = trainer(tmp_path, data_dir, kind, steps=6, batch_size=6)
    inputs, labels = full_batch(tr)
    before = eval_loss(tr, inputs, labels)
    tr.train()
    after = eval_loss(tr, inputs, labels)
    assert after < before, f"{kind}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("kind", ["vq", "scorer"])  # vq merges; the scorer selects and annotates
def test_save_load_round_trips_bit_identical_outputs(tmp_path: Path, data_dir: Path, kind: str) -> None:
    from peft import PeftModel

    tr = trainer(tmp_path, data_dir, kind)
    tr.train()
    tr.finish(None, 0)
    inputs, _ = full_batch(tr)
    with torch.no_grad():
        trained = tr.model(**inputs).logits
    loaded = fresh_tiny().model
    with torch.no_grad():
        plain = loaded(**inputs).logits
    vtc.wrap(loaded, f"trained:{tmp_path / 'adapter'}")
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, trained)
    vtc.unwrap(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, plain), "unwrap did not remove the LoRA adapter"
    peft_route = PeftModel.from_pretrained(fresh_tiny().model, str(tmp_path / "adapter"))
    vtc.wrap(peft_route.get_base_model(), load_compressor(tmp_path / "adapter"))
    with torch.no_grad():
        assert torch.equal(peft_route(**inputs).logits, trained)


class Interrupted(Exception):
    """Stands in for a run killed after its step-2 checkpoint."""


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, data_dir: Path, schedule: str) -> None:
    straight = trainer(tmp_path / "a", data_dir, steps=4, save_every=2, schedule=schedule)
    straight.train()
    first = trainer(tmp_path / "b", data_dir, steps=4, save_every=2, schedule=schedule)
    losses = first.losses

    def stop_at_step_2(step: int):
        if step == 2:
            raise Interrupted
        return losses(step)

    first.losses = stop_at_step_2
    with pytest.raises(Interrupted):
        first.train()
    with pytest.raises(ValueError, match="--resume"):
        trainer(tmp_path / "b", data_dir, steps=4, save_every=2, schedule=schedule)
    tm = fresh_tiny()
    cfg = TrainConfig(method="scorer", retain=0.1, steps=4, batch_size=3, lr=1e-2, lora_lr=1e-2, save_every=2,
                      schedule=schedule)
    resumed = CompressorTrainer(tm.model, tm.processor, data_dir, cfg, tmp_path / "b" / "adapter", resume=True,
                                progress=False)
    assert resumed.step == 2
    resumed.train()
    want, got = straight.trainable_parameters(), resumed.trainable_parameters()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_cosine_schedule_decays_both_learning_rates_to_a_tenth() -> None:
    cfg = TrainConfig(steps=5, schedule="cosine")
    assert [round(cfg.lr_scale(s), 4) for s in range(5)] == [1.0, 0.8682, 0.55, 0.2318, 0.1]
    assert TrainConfig(steps=5, schedule="constant").lr_scale(3) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="linear")


def test_broken_or_mismatched_adapters_fail_clearly(tmp_path: Path, data_dir: Path) -> None:
    tr = trainer(tmp_path, data_dir, steps=1)
    tr.train()
    tr.finish(None, 0)
    adapter = tmp_path / "adapter"
    other = fresh("qwen2_vl", 0).model
    with pytest.raises(ValueError, match="another base model"):
        vtc.wrap(other, f"trained:{adapter}")
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        vtc.wrap(fresh_tiny().model, "trained:someone/compressor-on-the-hub")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for file in adapter.iterdir():
        if file.is_file():
            (corrupt / file.name).write_bytes(file.read_bytes())
    weights = corrupt / "vtc_compressor.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(ValueError, match="corrupted"):
        vtc.wrap(fresh_tiny().model, f"trained:{corrupt}")
    weights.write_bytes((adapter / "vtc_compressor.safetensors").read_bytes())
    lora = corrupt / "adapter_model.safetensors"
    lora.write_bytes(b"not a safetensors file")
    model = fresh_tiny().model
    with pytest.raises(ValueError, match="corrupted"):
        vtc.wrap(model, f"trained:{corrupt}")
    assert not any("lora_" in n for n, _ in model.named_parameters()), "a failed load left LoRA layers behind"
    lora.write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    record = json.loads((corrupt / "vtc_compressor.json").read_text())
    record["config"]["width"] = 32
    (corrupt / "vtc_compressor.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="does not match its config"):
        load_compressor(corrupt)
    (corrupt / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="safetensors only"):
        load_compressor(corrupt)


def test_datasets_dataset_with_the_same_columns_trains(tmp_path: Path, data_dir: Path) -> None:
    import datasets

    items = load_items(data_dir)
    saved = tmp_path / "hf"
    datasets.Dataset.from_list(items).save_to_disk(str(saved))
    (saved / "videos").symlink_to(data_dir / "videos")
    assert load_items(saved) == items
    with pytest.raises(ValueError, match="lacks the columns"):
        bad = tmp_path / "bad"
        datasets.Dataset.from_list([{"video": "x.mp4"}]).save_to_disk(str(bad))
        load_items(bad)


def test_a_bad_line_in_training_data_names_the_file_and_line(tmp_path: Path, data_dir: Path) -> None:
    lines = (data_dir / "data.jsonl").read_text().splitlines()
    (tmp_path / "data.jsonl").write_text("\n".join([lines[0], '{"video": "videos/000001.mp4"}', *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="lacks") as info:
        load_items(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'data.jsonl'}:2: ")


def test_a_compressed_scope_restores_a_trained_wrap_with_its_lora(tmp_path: Path, data_dir: Path) -> None:
    tr = trainer(tmp_path, data_dir, steps=2)
    tr.train()
    tr.finish(None, 0)
    inputs, _ = full_batch(tr)
    model = fresh_tiny().model
    vtc.wrap(model, f"trained:{tmp_path / 'adapter'}")
    with torch.no_grad():
        before = model(**inputs).logits
    with vtc.compressed(model, "random:0.5"):
        assert not any("lora_" in n for n, _ in model.named_parameters())
    assert any("lora_" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


def test_cli_trains_an_adapter_that_synth_eval_loads(tmp_path: Path, data_dir: Path) -> None:
    from vtc.cli import main

    tm = fresh_tiny()
    model_dir = tmp_path / "model"
    tm.model.save_pretrained(model_dir)
    tm.processor.save_pretrained(model_dir)
    out = tmp_path / "adapter"
    common = ["--model", str(model_dir), "--device", "cpu"]
    assert main(["train", *common, "--method", "resampler", "--retain", "0.1", "--data", str(data_dir),
                 "--out", str(out), "--steps", "1", "--batch-size", "2", "--eval-data", str(data_dir),
                 "--eval-items", "2"]) == 0
    summary = json.loads((out / "vtc_compressor.json").read_text())["summary"]
    assert summary["steps"] == 1 and summary["held_out"]["n"] == 2
    result = tmp_path / "eval.json"
    assert main(["synth", "eval", str(data_dir), *common, "--method", f"trained:{out}", "--limit", "2",
                 "--json", str(result)]) == 0
    assert json.loads(result.read_text())["tokens_kept"] == vtc.Budget(retain=0.1).count(128)
    assert main(["train", *common, "--method", "resampler", "--retain", "0.1", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x")]) == 2
