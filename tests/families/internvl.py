"""Tiny InternVL (patches/internvl.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vtc.collate import left_pad_collate

from .base import TINY_VISION, Tiny, byte_tokenizer, chat_template, register, tiny_text


@register("internvl", rope_1d=True)
def internvl() -> Tiny:
    """InternVL: 112 px frames, 14 px patches, pixel shuffle 0.5: 4x4 = 16 tokens per frame (256 in the real model)."""
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    tokenizer = byte_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"), "<|im_end|>",
        {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
         "video_token": "<video>"},
    )
    config = InternVLConfig(
        # A wider weight init than the default 0.02 so the ViT's [CLS] attention is far from uniform.
        text_config=tiny_text(len(tokenizer), "qwen2"),
        vision_config=dict(TINY_VISION, image_size=112, initializer_range=0.3),
        image_token_id=tokenizer.context_image_token_id, image_seq_length=16, downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    sizes = dict(size={"height": 112, "width": 112})
    processor = InternVLProcessor(
        GotOcr2ImageProcessor(**sizes), tokenizer, InternVLVideoProcessor(**sizes), image_seq_length=16,
        chat_template=chat_template("<video>\n", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
    )

    def make_inputs(processor: Any, videos: list[np.ndarray], questions: list[str], **kwargs: Any) -> Any:
        # InternVLProcessor stacks a batch's videos, so it cannot batch clips of different lengths: run
        # it per sample and left-pad here (the model takes any mix, each frame being one image).
        samples = [
            processor(text=[f"<|im_start|>user\n<video>\n{q}<|im_end|>\n<|im_start|>assistant\n"], videos=[v],
                      return_tensors="pt", **kwargs)
            for v, q in zip(videos, questions)
        ]
        return left_pad_collate(samples, processor.tokenizer.pad_token_id)

    return Tiny("internvl", InternVLForConditionalGeneration(config), processor, make_inputs=make_inputs)
