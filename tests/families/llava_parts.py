"""What the tiny LLaVA-line builders share: their tokenizers, CLIP tower and id wiring."""
from __future__ import annotations

from typing import Any

from vtc.synth.model import byte_level_vocab

from .base import text_config


def llava_tokenizer():
    """A byte-level ``Qwen2Tokenizer`` with the LLaVA placeholders ``<image>`` and ``<video>``."""
    from transformers import Qwen2Tokenizer

    vocab = byte_level_vocab()
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"):
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<image>", "<video>"]})
    return tokenizer


def llama_tokenizer():
    """A real ``LlamaTokenizer``: byte-fallback pieces for all 256 bytes, the metaspace, ``<image>``, ``<video>``."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token in ("\u2581", "<image>", "<video>", "<pad>"):
        vocab[token] = len(vocab)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tokenizer


LLAMA_TEMPLATE = "USER: {videos}{question} ASSISTANT:"


def clip_vision(image_size: int = 56) -> dict[str, Any]:
    return dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, patch_size=14, image_size=image_size, projection_dim=32)


def llava_text_config(model_type: str, vocab_size: int) -> dict[str, Any]:
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    return {**text_config(vocab_size), "model_type": model_type, "rope_parameters": rope}


def llava_ids(tokenizer) -> dict[str, int]:
    return dict(image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                video_token_index=tokenizer.convert_tokens_to_ids("<video>"), tie_word_embeddings=True)
