"""Train vtc's reference video-QA model on the synthetic benchmark, on CPU, reproducibly from a seed.

The model is a stock Qwen2.5-VL (transformers' own config, model and processor classes) shrunk to
~2M parameters, so ``from_pretrained``, ``generate()`` and every vtc method work on it unchanged.

What makes a model this small learn on two CPU cores:
* the answer is the option's word, a single token, mapped back to the option letter when scored;
* a dense auxiliary loss on the visual tokens: each token's final hidden state, through the LLM's
  own final norm and tied ``lm_head``, must name what the renderer drew there (colour, shape, a
  moving object's direction, "small" for a detail clip's small object) and, for order/scene clips,
  which event it belongs to ("first", "second"), for count clips the count so far ("1", "2", ...)
  at the blinker's cell on every pair from its first blink, which the LLM can only compute from
  earlier visual tokens;
* for count clips, the same loss on ``<|vision_end|>`` naming the total count: the token after the
  video can attend to every blink, and gives the reply one fixed place to read the count from
  (the running count on the blinks alone left the reply to find the latest blink; count stayed
  at 0.43-0.58 held-out);
* on the tokens whose label names a direction or a count, the same logits also pay a cross-entropy
  over just that word's category (the four directions, the four counts): inside the shared soft
  target the word holds a third of the mass beside colour and shape, and the direction was not
  learnt (a linear probe of run 6's vision output read 26% of held-out mover tokens' directions;
  a vision tower trained on motion clips alone reached 69% in 600 steps with the soft target and
  95% with the category term added; in the full recipe it took count from 0.78-0.90 to 1.00
  held-out, motion stayed at 0.65);
* both losses also on the vision tower's output, read through the same norm and head: a short path
  that makes the tower itself encode each word. With the losses at the LLM output only, motion
  stayed at 0.65 (run 7); with this path it reached 0.80 by step 1500 and 1.00 at the end (run 8,
  held-out 0.996 overall);
* AdamW at 1e-3 with a warm-up-stable-decay schedule.

Run: ``python -m vtc.synth.train --seed 1 --out DIR`` (phase 1 of the shipped model: fast tier only;
phase 2, the fine-tunes below, is in eval/results/reference_tiers.md).

Mixed-size fine-tuning (issue 19): ``--init CHECKPOINT --scale-share S`` starts from a trained model and
draws each step's batch from the ``scale`` tier (224 px, 32 frames, 1,024 visual tokens) with probability
S, else from the ``fast`` tier (112 px, 16 frames, 128 tokens), so the model learns the larger input
without forgetting the smaller one; held-out accuracy is measured at both tiers. A step at the scale
tier costs several fast steps, hence its own, smaller batch (``--scale-batch-size``). Every evaluation
also writes a resumable state (weights, optimiser, both random generators, the log) and a loadable
snapshot of the model; ``--resume`` continues an interrupted run from its last state exactly.
``--scale-type-weights count=3`` draws scale-tier items of one type more often (the type a fine-tune
lags on; uniform by default).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..trained.checkpoint import TRAINER_STATE, load_optimizer, read_state, save_optimizer, write_state
from .dataset import load_dataset, make_dataset, scene_spec
from .fast_vision import speed_up_vision
from .labels import token_labels
from .model import FPS, build_model, build_processor, build_tokenizer, parse_answer, prompt_messages, question_text
from .tiers import TIERS, Tier
from .vocab import COLORS, COUNTS, DIRECTIONS, LETTERS, QUESTION_TYPES, SHAPES

TRAIN_SEED_OFFSET = 1_000  # fast-tier training data of model seed s comes from dataset seed 1000 + s
SCALE_SEED_OFFSET = 2_000  # scale-tier training data of model seed s: dataset seed 2000 + s (other item seeds)
HELD_OUT_SEED = 999_999  # the held-out split (at every tier): a seed never used for training data
RESUME_DIR = "resume"  # under --checkpoints: the latest weights, optimiser moments, random generators and log
# Settings a resumed run may change: how often it evaluates and how many CPU threads it uses
# (the thread count changes float summation order, not the recipe).
RESUME_FREE = ("eval_every", "threads")


@dataclass
class TrainConfig:
    seed: int = 0
    train_items: int = 8000
    steps: int = 3400
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 100
    decay_fraction: float = 0.25
    aux_weight: float = 0.5
    extra_questions: int = 2
    eval_items: int = 240
    eval_every: int = 500
    threads: int = 2
    init: str = ""  # a checkpoint to fine-tune (empty: random initialisation from the seed)
    scale_share: float = 0.0  # probability that a step's batch comes from the scale tier
    scale_batch_size: int = 4
    scale_train_items: int = 2000
    scale_type_weights: str = ""  # e.g. "count=3": draw scale-tier items of a type that much more often (empty: uniform)


def parse_type_weights(text: str) -> dict[str, float]:
    """``"count=3,order=2"`` -> {"count": 3.0, "order": 2.0}; unnamed types weigh 1."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in QUESTION_TYPES or not value:
            raise ValueError(f"bad type weight {part!r}: write TYPE=WEIGHT with TYPE one of {', '.join(QUESTION_TYPES)}")
        if float(value) <= 0:
            raise ValueError(f"type weight {part!r} must be positive")
        weights[name] = float(value)
    return weights


def item_probabilities(items: list[dict], weights: dict[str, float]) -> np.ndarray:
    """Each item's draw probability, proportional to its type's weight."""
    raw = np.array([weights.get(item["type"], 1.0) for item in items])
    return raw / raw.sum()


def video_metadata(num_frames: int) -> Any:
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=num_frames, fps=FPS, frames_indices=list(range(num_frames)))


def model_inputs(
    processor: Any, items: list[dict], frames: list[np.ndarray], with_answers: bool,
    extra_turns: list[list[dict]] | None = None,
) -> Any:
    """Processor inputs for a batch: the chat prompt (plus the answer word, and follow-up
    question/answer turns about the same clip, when training)."""
    texts = []
    for b, it in enumerate(items):
        messages = prompt_messages(it, answer=it["answer_text"] if with_answers else None)
        for turn in (extra_turns[b] if extra_turns else []):
            messages += [{"role": "user", "content": [{"type": "text", "text": question_text(turn)}]},
                         {"role": "assistant", "content": [{"type": "text", "text": turn["answer_text"]}]}]
        texts.append(processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=not with_answers))
    processor.tokenizer.padding_side = "left"
    return processor(text=texts, videos=frames, video_metadata=[video_metadata(len(f)) for f in frames],
                     do_sample_frames=False, padding=True, return_tensors="pt")


@dataclass
class TierData:
    """One tier's training or held-out clips: items, what the renderer drew (sprites, per-token labels).

    Frames are decoded from the mp4s when a batch needs them (the h264 round trip included, as at
    evaluation time): a scale-tier clip is 4.8 MB decoded, too much to hold thousands of in memory."""

    tier: Tier
    root: Path
    items: list[dict]
    sprites: list[list[Any]]
    labels: list[list[list[int]]]

    def frames(self, indices: list[int]) -> list[np.ndarray]:
        from ..video import load_video

        return [load_video(self.root / self.items[i]["video"], num_frames=self.tier.num_frames).frames for i in indices]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, then linear decay to zero over the last ``decay_fraction`` of steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    decay_start = int(cfg.steps * (1 - cfg.decay_fraction))
    if step < decay_start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / (cfg.steps - decay_start))


class Trainer:
    def __init__(self, cfg: TrainConfig, cache: Path) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        self.tokenizer = build_tokenizer()
        self.processor = build_processor(self.tokenizer)
        self.model = self._initial_model()
        speed_up_vision(self.model)
        self.video_id = self.model.config.video_token_id
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.vision_end_id = self.tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.categories = [self.tokenizer.convert_tokens_to_ids(list(words)) for words in (DIRECTIONS, COUNTS)]
        self.vision_output = torch.empty(0)
        self.model.model.visual.register_forward_hook(self._keep_vision_output)
        tiers = [(TIERS["fast"], TRAIN_SEED_OFFSET, cfg.train_items)]
        if cfg.scale_share > 0:
            tiers.append((TIERS["scale"], SCALE_SEED_OFFSET, cfg.scale_train_items))
        self.train_data = {tier.name: self._tier_data(cache, tier, offset + cfg.seed, count, "train")
                      for tier, offset, count in tiers}
        self.held_out_data = {tier.name: self._tier_data(cache, tier, HELD_OUT_SEED, cfg.eval_items, "heldout")
                         for tier, _, _ in tiers}
        self.rng = np.random.default_rng(cfg.seed)
        weights = parse_type_weights(cfg.scale_type_weights)
        self.draw_p = {name: item_probabilities(data.items, weights) if name == "scale" and weights else None
                       for name, data in self.train_data.items()}

    def _initial_model(self) -> Any:
        """The checkpoint to fine-tune (its tokenizer must be the one built here), or a fresh model."""
        if not self.cfg.init:
            return build_model(self.tokenizer, self.cfg.seed)
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.cfg.init, dtype=torch.float32)
        if model.config.text_config.vocab_size != len(self.tokenizer):
            raise ValueError(f"{self.cfg.init} has {model.config.text_config.vocab_size} token embeddings; "
                             f"the tokenizer built here has {len(self.tokenizer)}")
        return model

    def _tier_data(self, cache: Path, tier: Tier, seed: int, count: int, split: str) -> TierData:
        """A tier's clips, rendered into ``cache`` once (the fast tier keeps its original directory names)."""
        suffix = "" if tier.name == "fast" else f"-{tier.name}"
        root = cache / f"{split}-seed{seed}-n{count}{suffix}"
        if not (root / "data.jsonl").is_file():
            make_dataset(root, seed=seed, count=count, num_frames=tier.num_frames, size=tier.size, fps=FPS)
        items = load_dataset(root)
        specs = [scene_spec(it["seed"], it["type"], it["answer"], it["answer_text"], tier.num_frames, tier.size)[0]
                 for it in items]
        labels = [self._label_ids(token_labels(spec, it["type"], tier.num_frames, tier.size))
                  for spec, it in zip(specs, items)]
        return TierData(tier, root, items, [spec.sprites for spec in specs], labels)

    def _label_ids(self, words: list[list[str]]) -> list[list[int]]:
        return [[self.tokenizer.convert_tokens_to_ids(w) for w in ws] for ws in words]

    def lookup_questions(self, data: TierData, index: int) -> list[dict]:
        """Follow-up questions about the clip's objects ("What colour is the circle?"), answerable from
        the same frames: more answer supervision per vision pass for the lookup every type relies on."""
        specs = data.sprites[index]
        questions = []
        for sprite in specs:
            same_shape = sum(s.shape == sprite.shape for s in specs)
            same_colour = sum(s.color == sprite.color for s in specs)
            if same_shape == 1:
                questions.append(("colour", f"What colour is the {sprite.shape}?", sprite.color, tuple(COLORS)))
            if same_colour == 1:
                questions.append(("shape", f"What shape is the {sprite.color} object?", sprite.shape, SHAPES))
        picks = self.rng.permutation(len(questions))[: self.cfg.extra_questions]
        turns = []
        for p in picks.tolist():
            _, text, answer, pool = questions[p]
            distractors = self.rng.choice([v for v in pool if v != answer], size=3, replace=False).tolist()
            values = distractors[:]
            values.insert(int(self.rng.integers(4)), answer)
            turns.append({"question": text, "options": [f"{LETTERS[i]}. {v}" for i, v in enumerate(values)],
                          "answer_text": answer})
        return turns

    def _keep_vision_output(self, module: Any, args: Any, output: Any) -> None:
        """The merged visual tokens of the batch, in the order the prompt's video tokens take them."""
        self.vision_output = output.pooler_output

    def _word_losses(self, logits: torch.Tensor, soft: list[torch.Tensor], categories: list[list[tuple[int, int]]]) -> torch.Tensor:
        """Soft cross-entropy over the whole vocabulary plus the category terms."""
        loss = -(torch.stack(soft) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return loss + self._category_loss(logits, categories)

    def _category_targets(self, words: list[int], row: int, out: list[list[tuple[int, int]]]) -> None:
        """Record (row, index within its category) for each category word among a token's label."""
        for category, ids in zip(out, self.categories):
            category += [(row, ids.index(w)) for w in words if w in ids]

    def _category_loss(self, logits: torch.Tensor, targets: list[list[tuple[int, int]]]) -> torch.Tensor:
        """Cross-entropy over each category's words only, averaged over the labelled tokens."""
        terms = [
            F.cross_entropy(logits[[r for r, _ in pairs]][:, ids], torch.tensor([i for _, i in pairs]), reduction="sum")
            for ids, pairs in zip(self.categories, targets) if pairs
        ]
        count = sum(len(pairs) for pairs in targets)
        return torch.stack(terms).sum() / count if count else logits.sum() * 0.0

    def losses(self, data: TierData, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [data.items[i] for i in batch]
        extra = [self.lookup_questions(data, i) for i in batch]
        inputs = model_inputs(self.processor, items, data.frames(batch), True, extra)
        hidden = self.model.model(**inputs).last_hidden_state
        ids = inputs["input_ids"]
        # Every reply is "<word><|im_end|>\n" and closes an even-numbered turn: predict the word and the end.
        rows, cols = [], []
        for b in range(len(batch)):
            for end in (ids[b] == self.end_id).nonzero().flatten()[1::2].tolist():
                rows += [b, b]
                cols += [end - 2, end - 1]  # hidden at these positions predicts the word, then <|im_end|>
        logits = self.model.lm_head(hidden[rows, cols])
        targets = ids[rows, [c + 1 for c in cols]]
        answer_loss = F.cross_entropy(logits.float(), targets)
        # Auxiliary: visual tokens name what was drawn there; <|vision_end|> names a count clip's count.
        vis_rows, vis_cols, soft = [], [], []
        category_targets: list[list[tuple[int, int]]] = [[] for _ in self.categories]
        vision_rows, vision_soft = [], []
        vision_categories: list[list[tuple[int, int]]] = [[] for _ in self.categories]
        vocab = logits.shape[-1]
        offset = 0
        for b, index in enumerate(batch):
            positions = (ids[b] == self.video_id).nonzero().flatten()
            for k, (position, words) in enumerate(zip(positions.tolist(), data.labels[index])):
                if words:
                    self._category_targets(words, len(soft), category_targets)
                    self._category_targets(words, len(vision_soft), vision_categories)
                    target = torch.zeros(vocab)
                    target[words] = 1.0 / len(words)
                    vis_rows.append(b)
                    vis_cols.append(position)
                    soft.append(target)
                    vision_rows.append(offset + k)
                    vision_soft.append(target)
            offset += len(positions)
            if data.items[index]["type"] == "count":
                total = self.tokenizer.convert_tokens_to_ids(data.items[index]["answer_text"])
                self._category_targets([total], len(soft), category_targets)
                target = torch.zeros(vocab)
                target[total] = 1.0
                vis_rows.append(b)
                vis_cols.append(int((ids[b] == self.vision_end_id).nonzero()[0]))
                soft.append(target)
        aux_logits = self.model.lm_head(hidden[vis_rows, vis_cols]).float()
        # The same words read straight from the vision tower's output (through the LLM's final norm and
        # head): a short path that makes the tower itself encode them, direction included.
        language_model = self.model.model.language_model
        vision_logits = self.model.lm_head(language_model.norm(self.vision_output[vision_rows])).float()
        return answer_loss, (self._word_losses(aux_logits, soft, category_targets)
                             + self._word_losses(vision_logits, vision_soft, vision_categories))

    @torch.no_grad()
    def evaluate(self, data: TierData) -> dict[str, Any]:
        """Accuracy on ``data`` (the answer word is the argmax of the first reply token)."""
        self.model.eval()
        correct: dict[str, list[bool]] = {}
        chunk_size = 32 if data.tier.name == "fast" else 8
        for start in range(0, len(data.items), chunk_size):
            indices = list(range(start, min(start + chunk_size, len(data.items))))
            chunk = [data.items[i] for i in indices]
            inputs = model_inputs(self.processor, chunk, data.frames(indices), with_answers=False)
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1]
            replies = self.tokenizer.batch_decode(logits.argmax(-1)[:, None])
            for item, reply in zip(chunk, replies):
                correct.setdefault(item["type"], []).append(parse_answer(reply, item["options"]) == item["answer"])
        self.model.train()
        by_type = {t: float(np.mean(v)) for t, v in sorted(correct.items())}
        overall = float(np.mean([x for v in correct.values() for x in v]))
        return {"overall": overall, "by_type": by_type}

    def held_out(self) -> dict[str, Any]:
        """Held-out accuracy at the fast tier (the original log's keys), plus every other trained tier."""
        record = self.evaluate(self.held_out_data["fast"])
        for name, data in self.held_out_data.items():
            if name != "fast":
                record[name] = self.evaluate(data)
        return record

    def step_data(self) -> TierData:
        """The tier this step's batch comes from (no draw when only the fast tier trains, so the
        original recipe's random stream is unchanged)."""
        if "scale" in self.train_data and self.rng.random() < self.cfg.scale_share:
            return self.train_data["scale"]
        return self.train_data["fast"]

    def train(self, checkpoints: Path, resume: bool = False) -> list[dict]:
        """Run the remaining steps; evaluate and checkpoint every ``eval_every`` steps and at the end."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.01)
        first, log, spent = 0, [], 0.0
        state = read_state(checkpoints / RESUME_DIR)
        if state is not None and not resume:
            raise ValueError(f"{checkpoints / RESUME_DIR} holds an earlier run: pass --resume to continue it "
                             "or choose another --checkpoints directory")
        if state is not None:
            first, log, spent = self._restore(checkpoints / RESUME_DIR, state, optimizer)
        rng = self.rng
        self.model.train()
        start = time.time() - spent
        bar = tqdm(range(first, cfg.steps), desc="train", initial=first, total=cfg.steps)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            data = self.step_data()
            size = cfg.batch_size if data.tier.name == "fast" else cfg.scale_batch_size
            batch = rng.choice(len(data.items), size=size, replace=False, p=self.draw_p[data.tier.name]).tolist()
            answer_loss, aux_loss = self.losses(data, batch)
            loss = answer_loss + cfg.aux_weight * aux_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimizer.step()
            bar.set_postfix(answer=f"{answer_loss.item():.3f}", aux=f"{aux_loss.item():.3f}")
            record = {"step": step, "tier": data.tier.name, "answer_loss": answer_loss.item(),
                      "aux_loss": aux_loss.item(), "lr": lr_at(step, cfg), "seconds": time.time() - start}
            log.append(record)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                record["held_out"] = self.held_out()
                tqdm.write(f"step {step + 1}: held-out {json.dumps(record['held_out'])}")
                self.save_checkpoint(checkpoints, step + 1, optimizer, log, time.time() - start)
        return log

    def save_checkpoint(self, checkpoints: Path, steps_done: int, optimizer: torch.optim.Optimizer,
                        log: list[dict], seconds: float) -> None:
        """A loadable snapshot of the model after ``steps_done`` steps, and the state to resume from."""
        self.save(checkpoints / f"step-{steps_done:05d}")
        directory = checkpoints / RESUME_DIR
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRAINER_STATE).unlink(missing_ok=True)  # an interrupted save is never resumed from
        self.save(directory)
        write_state(directory, {
            "steps_done": steps_done, "config": asdict(self.cfg), "seconds": seconds, "log": log,
            "optimizer": save_optimizer(optimizer, directory), "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state().tolist(),
        })

    def _restore(self, directory: Path, state: dict[str, Any], optimizer: torch.optim.Optimizer) -> tuple[int, list, float]:
        """Weights, optimiser and random generators of the last checkpoint; returns (next step, log, seconds)."""
        # A setting added after the run started had its default then.
        saved = {k: v for k, v in {**asdict(TrainConfig()), **state["config"]}.items() if k not in RESUME_FREE}
        current = {k: v for k, v in asdict(self.cfg).items() if k not in RESUME_FREE}
        if saved != current:
            changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
            raise ValueError(f"cannot resume {directory}: the run was started with other settings {changed}")
        from transformers import Qwen2_5_VLForConditionalGeneration

        # from_pretrained maps the saved key names back onto the module tree and re-ties the head.
        saved_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
        self.model.load_state_dict(saved_model.state_dict())
        load_optimizer(optimizer, directory, state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        return int(state["steps_done"]), list(state["log"]), float(state["seconds"])

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.model.eval()
        self.model.save_pretrained(out, safe_serialization=True)
        self.processor.save_pretrained(out)
        self.model.train()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the reference video-QA model on the synthetic benchmark")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/synth"), help="where the training mp4s are written")
    parser.add_argument("--log", type=Path, help="training log (JSON) path; default OUT/training_log.json")
    parser.add_argument("--checkpoints", type=Path,
                        help="where a model snapshot and the resume state are written at every evaluation "
                             "(default: OUT-checkpoints beside OUT)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoints")
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    checkpoints = args.checkpoints or args.out.with_name(args.out.name + "-checkpoints")
    trainer = Trainer(cfg, args.cache)
    log = trainer.train(checkpoints, resume=args.resume)
    trainer.save(args.out)
    summary = {"config": asdict(cfg), "train_seconds": log[-1]["seconds"], "final_held_out": log[-1]["held_out"],
               "evals": [{"step": r["step"] + 1, **r["held_out"]} for r in log if "held_out" in r]}
    (args.log or args.out / "training_log.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["final_held_out"], indent=2))


if __name__ == "__main__":
    main()
