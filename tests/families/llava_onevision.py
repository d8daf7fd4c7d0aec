"""Tiny LLaVA-OneVision (patches/llava_onevision.py)."""
from __future__ import annotations

from .base import Tiny, chat_template, register
from .llava_parts import llava_ids, llava_text_config, llava_tokenizer


@register("llava_onevision", rope_1d=True, stacked_videos=True)
def llava_onevision() -> Tiny:
    """SigLIP 56 px / patch 14 (4x4 patches, pooled to 2x2 per frame) and a Qwen2 language model."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tokenizer = llava_tokenizer()
    config = LlavaOnevisionConfig(
        text_config=llava_text_config("qwen2", len(tokenizer)),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, patch_size=14, image_size=56, vision_use_head=False),
        vision_feature_layer=-1, image_grid_pinpoints=[[56, 56]], **llava_ids(tokenizer),
    )
    size = {"height": 56, "width": 56}
    processor = LlavaOnevisionProcessor(
        LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[56, 56]]), tokenizer,
        LlavaOnevisionVideoProcessor(size=size), num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=chat_template("<video>", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    return Tiny("llava_onevision", model, processor, video_placeholder="<video>", frame_rows=4, video_suffix_rows=1)
