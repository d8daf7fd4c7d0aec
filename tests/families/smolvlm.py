"""Tiny SmolVLM (patches/smolvlm.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vtc.collate import left_pad_collate

from .base import TINY_VISION, Tiny, byte_tokenizer, chat_template, metadata, register, tiny_text


@register("smolvlm", rope_1d=True)
def smolvlm() -> Tiny:
    """SmolVLM: 112 px frames, 14 px patches, scale factor 2: 4x4 = 16 tokens per frame (64 in SmolVLM2)."""
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)

    tokenizer = byte_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
         "<image>", "<video>"), "<end_of_utterance>",
        {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>", "global_image_token": "<global-img>",
         "video_token": "<video>", "end_of_utterance_token": "<end_of_utterance>"},
    )
    text = dict(tiny_text(len(tokenizer), "llama"), pad_token_id=tokenizer.pad_token_id)
    config = SmolVLMConfig(
        text_config=text, vision_config=dict(TINY_VISION, image_size=112), scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    sizes = dict(size={"longest_edge": 112}, max_image_size={"longest_edge": 112})
    processor = SmolVLMProcessor(
        SmolVLMImageProcessor(**sizes, do_image_splitting=False), tokenizer, SmolVLMVideoProcessor(**sizes),
        image_seq_len=16,
        chat_template=chat_template("<video>", "<|im_start|>", "<end_of_utterance>\n", "Assistant:"),
    )

    def make_inputs(processor: Any, videos: list[np.ndarray], questions: list[str], **kwargs: Any) -> Any:
        # SmolVLMProcessor writes the batch's padded frame count into every prompt ("eight frames" for a
        # four-frame clip), so batched prompts differ from single ones: run it per sample and collate.
        samples = [
            processor(text=[f"<|im_start|>User: <video>{q}<end_of_utterance>\nAssistant:"], videos=[v],
                      video_metadata=[metadata(len(v))], do_sample_frames=False, return_tensors="pt", **kwargs)
            for v, q in zip(videos, questions)
        ]
        return left_pad_collate(samples, processor.tokenizer.pad_token_id)

    return Tiny("smolvlm", SmolVLMForConditionalGeneration(config), processor, make_inputs=make_inputs)
