"""Tiny LLaVA-NeXT-Video (patches/llava_next_video.py)."""
from __future__ import annotations

from .base import Tiny, chat_template, register
from .llava_parts import LLAMA_TEMPLATE, clip_vision, llama_tokenizer, llava_ids, llava_text_config


@register("llava_next_video", rope_1d=True, stacked_videos=True)
def llava_next_video() -> Tiny:
    """CLIP 56 px / patch 14 (4x4 patches, average-pooled to 2x2 per frame) and a Llama language model."""
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor)

    tokenizer = llama_tokenizer()
    config = LlavaNextVideoConfig(
        text_config=llava_text_config("llama", len(tokenizer)), vision_config=clip_vision(),
        vision_feature_layer=-2, image_grid_pinpoints=[[56, 56]], **llava_ids(tokenizer),
    )
    sizes = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaNextVideoProcessor(
        LlavaNextVideoVideoProcessor(**sizes), LlavaNextImageProcessor(**sizes, image_grid_pinpoints=[[56, 56]]),
        tokenizer, patch_size=14, vision_feature_select_strategy="default",
        chat_template=chat_template("<video>", "", "\n", "ASSISTANT:"),
    )
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    return Tiny("llava_next_video", model, processor, video_placeholder="<video>", template=LLAMA_TEMPLATE,
                frame_rows=4)
