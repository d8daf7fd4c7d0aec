"""Tiny VideoLLaMA3 (patches/video_llama_3.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import TINY_VISION, Tiny, build_tokenizer, chat_template, metadata, register, tiny_text


@register("video_llama_3", rope_1d=True)
def video_llama_3() -> Tiny:
    """VideoLLaMA3: 112 px frames, 14 px patches, merge 2: 4x4 = 16 tokens per frame, built-in compression on."""
    from transformers import (VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3ImageProcessor,
                              VideoLlama3Processor, VideoLlama3VideoProcessor)

    tokenizer = build_tokenizer()
    config = VideoLlama3Config(
        text_config=tiny_text(len(tokenizer), "qwen2"), vision_config=TINY_VISION,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"), tie_word_embeddings=True,
    )
    # The video processor divides longest_edge by the frame count: room for 16 frames of 112x112.
    processor = VideoLlama3Processor(
        VideoLlama3ImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}), tokenizer,
        VideoLlama3VideoProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112 * 16}),
        chat_template=chat_template("<|video_pad|>\n", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
    )

    def make_inputs(processor: Any, videos: list[np.ndarray], questions: list[str], **kwargs: Any) -> Any:
        processor.tokenizer.padding_side = "left"
        texts = [f"<|im_start|>user\n<|video_pad|>\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
        return processor(text=texts, videos=videos, video_metadata=[metadata(len(v)) for v in videos],
                         do_sample_frames=False, padding=True, return_tensors="pt", **kwargs)

    return Tiny("video_llama_3", VideoLlama3ForConditionalGeneration(config), processor, make_inputs=make_inputs)
