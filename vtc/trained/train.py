"""``vtc train``: fit a compressor and a LoRA adapter on the LLM together, through the answer loss.

The base model stays frozen. PEFT injects LoRA into the LLM's attention and MLP projections;
the compressor runs inside ``vtc.wrap`` exactly as at inference (hard exact-budget selection),
with straight-through gradients in training mode. Logits come back for the compressed sequence,
so the reply labels are compacted the same way (``labels.compact_labels``).

Every step draws its batch and its exploration noise from (seed, step), and the learning rates are a
function of the step, so a run resumed from a checkpoint continues exactly as an uninterrupted one
would (with ``--schedule cosine``, resuming with more ``--steps`` stretches the rest of the decay).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import api
from ..checks import check_output_dir
from ..synth.evaluate import MERGED_CELL, TEMPORAL_PATCH, evidence_tokens
from .checkpoint import TRAINER_STATE, load_optimizer, read_state, save_optimizer, write_state
from .config import TrainConfig
from .data import load_items, training_batch
from .labels import compact_labels, next_token_loss
from .store import ADAPTER_WEIGHTS, COMPRESSOR_WEIGHTS, base_fingerprint, build, lora_target_modules, save_compressor

CHECKPOINT_DIR = "checkpoint"


class CompressorTrainer:
    """Owns the LoRA-injected model, the compressor, the optimizer and the checkpoints of one run."""

    def __init__(self, model: Any, processor: Any, data_dir: str | Path, cfg: TrainConfig, out: str | Path,
                 resume: bool = False, progress: bool = True) -> None:
        from accelerate import Accelerator
        from peft import LoraConfig, get_peft_model

        self.cfg, self.processor, self.progress = cfg, processor, progress
        self.out, self.data_dir = check_output_dir(out, "output directory"), Path(data_dir)
        self.items = load_items(self.data_dir)
        if cfg.batch_size > len(self.items):
            raise ValueError(f"batch size {cfg.batch_size} exceeds the {len(self.items)} training items")
        # The model's device decides (``--device cpu`` on a GPU machine stays on the CPU).
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=on_cpu)
        self.base = base_fingerprint(model)
        torch.manual_seed(cfg.seed)
        options = {"annotate": cfg.annotate} if cfg.method == "scorer" else {}
        self.compressor = build(cfg.method, hidden_size=self.base["hidden_size"], retain=cfg.retain, **options)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                          target_modules=lora_target_modules(model))
        self.peft_model = get_peft_model(model, lora)  # injects LoRA in place and freezes the base weights
        self.model = model
        self.compressor.to(self.accelerator.device)
        lora_params = [p for p in self.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([
            {"params": list(self.compressor.parameters()), "lr": cfg.lr},
            {"params": lora_params, "lr": cfg.lora_lr},
        ], weight_decay=0.0)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.video_token_id = int(model.config.video_token_id)
        self.use_evidence = cfg.method == "scorer" and cfg.evidence_weight > 0 and "evidence" in self.items[0]
        if self.use_evidence:
            vision = model.config.vision_config
            if vision.patch_size * vision.spatial_merge_size != MERGED_CELL or vision.temporal_patch_size != TEMPORAL_PATCH:
                raise ValueError("the evidence loss assumes 28 px merged tokens and 2-frame temporal patches; "
                                 "pass --evidence-weight 0 for this model")
        self.step, self.log, self.seconds = 0, [], 0.0
        checkpoint = self.out / CHECKPOINT_DIR
        state = read_state(checkpoint)
        if state is not None and not resume:
            raise ValueError(f"{checkpoint} holds an earlier run: pass --resume to continue it or choose another --out")
        if state is not None:
            self._restore(checkpoint, state)
        api.wrap(model, self.compressor, retain=cfg.retain)
        self.engine = getattr(model, api.ENGINE_ATTR)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        named = {f"compressor.{n}": p for n, p in self.compressor.named_parameters()}
        named.update({n: p for n, p in self.peft_model.named_parameters() if p.requires_grad})
        return named

    # -- one step ---------------------------------------------------------------------------------
    def batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.cfg.seed, step])
        return rng.choice(len(self.items), size=self.cfg.batch_size, replace=False).tolist()

    def losses(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ..video import load_video

        items = [self.items[i] for i in self.batch(step)]
        videos = [load_video(self.data_dir / it["video"], num_frames=self.cfg.num_frames) for it in items]
        inputs, labels = training_batch(self.processor, items, videos)
        inputs = inputs.to(self.accelerator.device)
        self.compressor.noise_generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        self.compressor.last_scores = []
        with self.accelerator.autocast():
            logits = self.model(**inputs).logits
        labels = compact_labels(labels, self.engine.prefill_compaction)
        answer = next_token_loss(logits, labels)
        evidence = self._evidence_loss(items, inputs["video_grid_thw"]) if self.use_evidence else answer.new_zeros(())
        return answer, evidence

    def _evidence_loss(self, items: list[dict], grids: torch.Tensor) -> torch.Tensor:
        """Listwise: -log of the softmax mass the scorer puts on the tokens the question needs."""
        merge = self.model.config.vision_config.spatial_merge_size
        terms = []
        for item, (source, scores), (t, h, w) in zip(items, self.compressor.last_scores, grids.tolist()):
            needed = sorted(evidence_tokens(item, (t, h // merge, w // merge)))
            if not needed:
                continue
            wanted = torch.isin(source, torch.tensor(needed, device=source.device))
            terms.append(torch.logsumexp(scores, 0) - torch.logsumexp(scores[wanted.to(scores.device)], 0))
        return torch.stack(terms).mean() if terms else next(self.compressor.parameters()).new_zeros(())

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        self.model.eval()  # no dropout anywhere; the compressor alone switches to training behaviour
        self.compressor.train()
        params = list(self.trainable_parameters().values())
        bar = tqdm(range(self.step, cfg.steps), desc=f"train {cfg.method}", initial=self.step, total=cfg.steps,
                   disable=not self.progress)
        for step in bar:
            start = time.perf_counter()
            answer, evidence = self.losses(step)
            loss = answer + cfg.evidence_weight * evidence
            self.optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group, lr in zip(self.optimizer.param_groups, (cfg.lr, cfg.lora_lr)):
                group["lr"] = lr * cfg.lr_scale(step)
            self.optimizer.step()
            self.seconds += time.perf_counter() - start
            self.log.append({"step": step, "loss": loss.item(), "answer_loss": answer.item(),
                             "evidence_loss": evidence.item(), "seconds": self.seconds})
            bar.set_postfix(loss=f"{loss.item():.3f}", answer=f"{answer.item():.3f}")
            self.step = step + 1
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        self.compressor.eval()
        return self.log

    # -- saving -----------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        directory = self.out / CHECKPOINT_DIR
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRAINER_STATE).unlink(missing_ok=True)
        self.save_adapter(directory)
        optimizer = save_optimizer(self.optimizer, directory)
        write_state(directory, {"step": self.step, "config": asdict(self.cfg), "seconds": self.seconds,
                                "log": self.log, "optimizer": optimizer})

    def save_adapter(self, directory: Path, extra: dict[str, Any] | None = None) -> None:
        """PEFT's adapter files plus the compressor: what ``vtc.wrap(model, "trained:DIR")`` loads."""
        self.peft_model.save_pretrained(str(directory), safe_serialization=True)
        save_compressor(self.compressor, directory, self.base, {"training": asdict(self.cfg), **(extra or {})})

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = {k: v for k, v in state["config"].items() if k not in ("steps", "save_every")}
        current = {k: v for k, v in asdict(self.cfg).items() if k not in ("steps", "save_every")}
        if saved != current:
            changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
            raise ValueError(f"cannot resume {directory}: the run was started with other settings {changed}")
        set_peft_model_state_dict(self.peft_model, load_file(str(directory / ADAPTER_WEIGHTS)))
        self.compressor.load_state_dict(load_file(str(directory / COMPRESSOR_WEIGHTS)))
        load_optimizer(self.optimizer, directory, state["optimizer"])
        self.step, self.seconds, self.log = int(state["step"]), float(state["seconds"]), list(state["log"])

    def finish(self, eval_dir: str | Path | None, eval_items: int) -> dict[str, Any]:
        """Held-out accuracy of the trained model (compressed at the trained budget), then the final adapter."""
        from ..synth.evaluate import evaluate

        held_out = None
        if eval_dir is not None and eval_items > 0:
            held_out = evaluate(eval_dir, self.model, self.processor, num_frames=self.cfg.num_frames,
                                limit=eval_items, progress=self.progress)
        summary = {"train_seconds": self.seconds, "steps": self.step, "final_loss": self.log[-1]["loss"] if self.log else None,
                   "held_out": held_out, "eval_data": None if held_out is None else str(eval_dir)}
        self.save_adapter(self.out, {"summary": summary})
        return summary
