"""The reference model's architecture, tokenizer, processor and prompt format.

A stock Qwen2.5-VL shrunk to ~2M parameters: every transformers and vtc code path is the real one.
The tokenizer is a 256-symbol byte-level BPE vocabulary plus Qwen's special tokens and one token
per answer word, built in code because nothing can be downloaded.
"""
from __future__ import annotations

import json
import re
from typing import Any

import torch

from .vocab import COLORS, COUNTS, DIRECTIONS, LETTERS, SHAPES

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)
ANSWER_WORDS = tuple(COLORS) + SHAPES + DIRECTIONS + COUNTS
# Order words used by the auxiliary "what came before" labels (see labels.py).
EVENT_WORDS = ("first", "second", "third", "fourth")
# The detail object's label word; one token, so the question's "small" matches it (see labels.py).
SIZE_WORD = "small"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The processor's per-frame pixel cap: the largest tier the model is trained on. A larger frame is
# downscaled to what the model saw; a smaller one (the fast tier) passes unchanged, as before the cap rose.
MAX_FRAME_SIZE = 224
FPS = 4.0
NUM_FRAMES = 16  # frames per clip in training; saved in the processor as the checkpoint's default sampling
# Words of the prompt and question templates. Each becomes one BPE token (with and without a
# leading space), which cuts a byte-level prompt to about a third of its length and so the cost
# of every training step. A word missing here only costs more tokens, never correctness.
PROMPT_WORDS = (
    "user assistant What Which How In An Two The colour shape is the of a it object objects in which direction "
    "does move many times blink flashes briefly at one moment video appear appeared after other cuts to different "
    "scene shown cut Answer with option 's word"
).split()


def byte_level_vocab() -> dict[str, int]:
    """GPT-2's reversible byte -> printable-character table (256 entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return {c: i for i, c in enumerate(chars)}


def build_tokenizer(
    words: tuple[str, ...] = ANSWER_WORDS + EVENT_WORDS + (SIZE_WORD,), merged_words: tuple[str, ...] = tuple(PROMPT_WORDS)
) -> Any:
    """A real ``Qwen2Tokenizer``: bytes, Qwen's special tokens, BPE merges that make each of
    ``merged_words`` one token, then one added token per word in ``words``."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab = byte_level_vocab()
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    merges = word_merges(merged_words, vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.add_tokens([AddedToken(w, normalized=False, single_word=True) for w in words])
    return tokenizer


def word_merges(words: tuple[str, ...], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that spell each word (and its space-prefixed form) as one token, learnt by the
    ``tokenizers`` trainer so merge ranks never conflict between words; adds each merged token to
    ``vocab``."""
    if not words:
        return []
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    learner.train_from_iterator([f"{w} {w}" for w in words], trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(learner.to_str())["model"]["merges"]]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return merges


def build_processor(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(size={"shortest_edge": 56 * 56, "longest_edge": MAX_FRAME_SIZE * MAX_FRAME_SIZE})
    # The per-frame pixel cap is set, not left to transformers' changing default (it warns on every
    # video otherwise); at these sizes it changes nothing.
    video_processor = Qwen2VLVideoProcessor(**sizes, num_frames=NUM_FRAMES, cap_pixels_per_frame=True)
    return Qwen2_5_VLProcessor(
        Qwen2VLImageProcessor(**sizes), tokenizer, video_processor, chat_template=CHAT_TEMPLATE
    )


def build_model(tokenizer: Any, seed: int) -> Any:
    """Qwen2.5-VL: vision depth 2 / dim 96, LLM 3 layers x 192, tied embeddings.

    ``rope_theta=20`` with ``mrope_section=[4, 6, 6]``: with head_dim 32 and the usual 1e6, the h/w
    sections would rotate so slowly that positions 0-3 look identical.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=192, intermediate_size=512, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 20.0, "mrope_section": [4, 6, 6]},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, hidden_size=96, intermediate_size=192, num_heads=4, out_hidden_size=192,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def question_text(item: dict[str, Any]) -> str:
    return f"{item['question']}\n" + "\n".join(item["options"]) + "\nAnswer with the option's word."


def prompt_messages(item: dict[str, Any], answer: str | None = None) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_text(item)}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def parse_answer(text: str, options: list[str]) -> str | None:
    """The option letter a reply names: its word ("red") or its letter ("B" / "B.")."""
    reply = text.strip()
    values = {opt.split(". ", 1)[1].lower(): opt.split(". ", 1)[0] for opt in options}
    words = re.findall(r"[A-Za-z]+|[0-9]+", reply)
    if not words:
        return None
    first = words[0]
    if first.lower() in values:
        return values[first.lower()]
    if first in LETTERS[: len(options)]:
        return first
    return None
