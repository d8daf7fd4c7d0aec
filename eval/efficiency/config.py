"""Models and inputs for the efficiency benchmark: random-weight Qwen2.5-VL shapes or a local checkpoint.

Random weights are enough for speed: cost depends on shapes, not on what the weights learned.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

PATCH, MERGE, TEMPORAL = 14, 2, 2


@dataclass(frozen=True)
class Shape:
    """Language-model and vision-tower sizes of a random Qwen2.5-VL."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    vision_depth: int = 4
    vision_hidden: int = 256
    vision_heads: int | None = None  # default: hidden / 64
    vision_intermediate: int | None = None  # default: 2 x hidden
    full_attention_blocks: tuple[int, ...] | None = None  # default: the last block only


# "0.5b": Qwen2.5-VL's 0.5B-class language model (Qwen2.5-0.5B: 896 x 24, 14 heads, 2 KV heads, tied
# 151,936-token embedding) behind a small 4-layer vision tower (the real 32 x 1280 tower would dominate a
# one-thread CPU run); "tiny" is for tests.
SHAPES = {
    "0.5b": Shape(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936),
    # The same language model behind Qwen2.5-VL's real vision tower (32 blocks of 1280, 16 heads, MLP 3420,
    # full attention in blocks 7/15/23/31, windowed elsewhere): for vision-stage methods, whose saving is in it.
    "0.5b-vit": Shape(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, vision_depth=32,
                      vision_hidden=1280, vision_heads=16, vision_intermediate=3420,
                      full_attention_blocks=(7, 15, 23, 31)),
    # Qwen2.5-VL-7B's shape (language model 3584 x 28, 28 heads, 4 KV heads, MLP 18944; the same real tower):
    # for accelerators, where a realistic TTFT needs the real model's size.
    "7b": Shape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, vision_depth=32,
                vision_hidden=1280, vision_heads=16, vision_intermediate=3420, full_attention_blocks=(7, 15, 23, 31)),
    "tiny": Shape(hidden=64, layers=3, heads=2, kv_heads=1, intermediate=128, vocab=1200, vision_depth=1,
                  vision_hidden=32),
}


def build_model(shape: str, device: str, dtype: torch.dtype):
    """A random-weight model of a named shape, or a checkpoint when ``shape`` is a local path."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if shape not in SHAPES:
        model = AutoModelForImageTextToText.from_pretrained(shape, dtype=dtype, attn_implementation="sdpa")
        return model.to(device).eval().requires_grad_(False)
    s = SHAPES[shape]
    head_dim = s.hidden // s.heads
    section = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}),
        vision_config=dict(depth=s.vision_depth, hidden_size=s.vision_hidden,
                           intermediate_size=s.vision_intermediate or 2 * s.vision_hidden,
                           num_heads=s.vision_heads or max(1, s.vision_hidden // 64), out_hidden_size=s.hidden,
                           fullatt_block_indexes=list(s.full_attention_blocks or [s.vision_depth - 1]),
                           window_size=112),
        image_token_id=s.vocab - 5, video_token_id=s.vocab - 4, vision_start_token_id=s.vocab - 3,
        vision_end_token_id=s.vocab - 2, attn_implementation="sdpa",
    )
    # Built on the device in its dtype: a 7B model initialised on one CPU thread in float32 would take minutes.
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def shape_of(model) -> dict:
    """The language-model numbers the FLOP count needs, read from the model's config."""
    text = model.config.text_config
    return dict(hidden=text.hidden_size, layers=text.num_hidden_layers, heads=text.num_attention_heads,
                kv_heads=text.num_key_value_heads, intermediate=text.intermediate_size, vocab=text.vocab_size)


def make_inputs(model, frames: int, size: int, batch: int = 1, text_tokens: int = 64) -> dict:
    """``batch`` prompts of one video each, as the processor builds them; sample i's question is
    ``4 * i`` tokens longer than sample 0's, so a batch is left-padded like real mixed-length prompts."""
    cfg, device = model.config, model.device
    dtype = next(model.parameters()).dtype
    grid = torch.tensor([[frames // TEMPORAL, size // PATCH, size // PATCH]] * batch, device=device)
    n_video = int(grid[0].prod()) // MERGE**2
    rows = []
    for i in range(batch):
        rows.append([5] * (text_tokens // 2) + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video
                    + [cfg.vision_end_token_id] + [6] * (text_tokens // 2 + 4 * i))
    width = max(map(len, rows))
    pad = cfg.text_config.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    pixels = torch.randn(int(grid.prod(dim=1).sum()), 3 * TEMPORAL * PATCH * PATCH, device=device, dtype=dtype)
    return dict(input_ids=input_ids, attention_mask=mask, mm_token_type_ids=(input_ids == cfg.video_token_id).int() * 2,
                pixel_values_videos=pixels, video_grid_thw=grid,
                second_per_grid_ts=torch.ones(batch, device=device))


def describe(shape: str) -> dict:
    return asdict(SHAPES[shape]) if shape in SHAPES else {"checkpoint": shape}
