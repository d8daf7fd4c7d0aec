"""Tiny Video-LLaVA (patches/video_llava.py)."""
from __future__ import annotations

from .base import Tiny, chat_template, register
from .llava_parts import LLAMA_TEMPLATE, clip_vision, llama_tokenizer, llava_ids, llava_text_config


@register("video_llava", rope_1d=True, stacked_videos=True)
def video_llava() -> Tiny:
    """CLIP 56 px / patch 14: per frame the [CLS] and 4x4 patches (17 rows); a Llama language model."""
    from transformers import (VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor,
                              VideoLlavaProcessor, VideoLlavaVideoProcessor)

    tokenizer = llama_tokenizer()
    config = VideoLlavaConfig(
        text_config=llava_text_config("llama", len(tokenizer)), vision_config=clip_vision(),
        vision_feature_layer=-2, **llava_ids(tokenizer),
    )
    sizes = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = VideoLlavaProcessor(
        VideoLlavaImageProcessor(**sizes), VideoLlavaVideoProcessor(**sizes), tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template("<video>", "", "\n", "ASSISTANT:"),
    )
    model = VideoLlavaForConditionalGeneration(config).eval()
    return Tiny("video_llava", model, processor, video_placeholder="<video>", template=LLAMA_TEMPLATE,
                frame_rows=16, frame_prefix_rows=1)
