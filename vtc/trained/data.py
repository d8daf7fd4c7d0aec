"""Training items: a ``vtc synth make`` directory, or a ``datasets`` dataset with the same columns."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..synth.dataset import ITEM_KEYS as COLUMNS
from ..synth.model import prompt_messages
from .labels import reply_labels


def load_items(data_dir: str | Path) -> list[dict[str, Any]]:
    """Items of ``data_dir``: its ``data.jsonl``, else a dataset saved with ``Dataset.save_to_disk``.

    Video paths are relative to ``data_dir``. Items need the synthetic suite's columns; ``evidence``
    (boxes of what the question needs) is optional and enables the scorer's auxiliary loss.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"training data {str(root)!r} is not a local directory (make one with `vtc synth make`)")
    if (root / "data.jsonl").is_file():
        from ..synth.dataset import load_dataset

        items = load_dataset(root)  # checks every line: a bad one is named by file and line number
    else:
        import datasets

        try:
            items = list(datasets.load_from_disk(str(root)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{root} holds neither data.jsonl nor a dataset saved with save_to_disk") from None
    if not items:
        raise ValueError(f"{root} holds no items")
    missing = [c for c in COLUMNS if c not in items[0]]
    if missing:
        raise ValueError(f"{root} lacks the columns {missing}; items need {', '.join(COLUMNS)}")
    return items


def training_batch(processor: Any, items: list[dict[str, Any]], videos: list[Any]) -> tuple[Any, torch.Tensor]:
    """Processor inputs of prompt + reply for each item, and labels on the reply tokens only."""
    prompts = [processor.apply_chat_template(prompt_messages(it), tokenize=False, add_generation_prompt=True)
               for it in items]
    full = [processor.apply_chat_template(prompt_messages(it, answer=it["answer_text"]), tokenize=False)
            for it in items]
    tokenizer = processor.tokenizer
    full = [_through_end_of_turn(text, tokenizer.eos_token) for text in full]
    for prompt, text in zip(prompts, full):
        if not text.startswith(prompt):
            raise ValueError("the chat template does not put the reply after the generation prompt; cannot label it")
    reply_lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
                     - len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p, t in zip(prompts, full)]
    tokenizer.padding_side = "left"
    inputs = processor(text=full, videos=[v.frames for v in videos], video_metadata=[v.metadata() for v in videos],
                       do_sample_frames=False, padding=True, return_tensors="pt")
    return inputs, reply_labels(inputs["input_ids"], reply_lengths)


def _through_end_of_turn(text: str, eos: str | None) -> str:
    """The text up to and including the reply's end-of-turn token: what follows it is never generated."""
    if eos and eos in text:
        return text[: text.rindex(eos) + len(eos)]
    return text
