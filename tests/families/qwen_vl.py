"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL (patches/qwen_vl.py): the reference model's byte-level tokenizer."""
from __future__ import annotations

from typing import Any

from vtc.synth.model import CHAT_TEMPLATE, SPECIAL_TOKENS

from .base import Tiny, build_tokenizer, register, text_config

QWEN_SIZES = dict(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})


def _tokenizer_and_ids() -> tuple[Any, dict[str, Any]]:
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    common = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    return tokenizer, common


@register("qwen2_vl")
def qwen2_vl() -> Tiny:
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tokenizer, common = _tokenizer_and_ids()
    config = Qwen2VLConfig(
        text_config=text_config(len(tokenizer)),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        **common,
    )
    model = Qwen2VLForConditionalGeneration(config)
    processor = Qwen2VLProcessor(
        Qwen2VLImageProcessor(**QWEN_SIZES), tokenizer, Qwen2VLVideoProcessor(**QWEN_SIZES, cap_pixels_per_frame=True),
        chat_template=CHAT_TEMPLATE,
    )
    return Tiny("qwen2_vl", model, processor, fps=2.0)


@register("qwen2_5_vl")
def qwen2_5_vl() -> Tiny:
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tokenizer, common = _tokenizer_and_ids()
    config = Qwen2_5_VLConfig(
        text_config=text_config(len(tokenizer)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        **common,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = Qwen2_5_VLProcessor(
        Qwen2VLImageProcessor(**QWEN_SIZES), tokenizer, Qwen2VLVideoProcessor(**QWEN_SIZES, cap_pixels_per_frame=True),
        chat_template=CHAT_TEMPLATE,
    )
    return Tiny("qwen2_5_vl", model, processor, fps=2.0)


@register("qwen3_vl")
def qwen3_vl() -> Tiny:
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    tokenizer, common = _tokenizer_and_ids()
    config = Qwen3VLConfig(
        text_config=text_config(len(tokenizer), head_dim=16),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 1]),
        **common,
    )
    model = Qwen3VLForConditionalGeneration(config)
    sizes = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128 * 8}, patch_size=16)
    processor = Qwen3VLProcessor(
        Qwen2VLImageProcessor(**sizes), tokenizer, Qwen3VLVideoProcessor(**sizes, cap_pixels_per_frame=True),
        chat_template=CHAT_TEMPLATE,
    )
    return Tiny("qwen3_vl", model, processor, fps=2.0)
