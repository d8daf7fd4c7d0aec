"""A tiny random Qwen3-VL checkpoint (weights, config, processor) saved for vLLM, which loads models from disk.

It is the main suite's tiny Qwen3-VL (tests/families/qwen_vl.py) with two changes vLLM's CPU build needs:
* attention heads of 32 dimensions (its CPU attention kernels have no 16) and an M-RoPE split to match;
* the image processor normalises with 0.5/0.5 like the video processor, as real Qwen3-VL checkpoints do:
  vLLM normalises video pixels inside the tower with the *image* processor's mean and std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.families.base import text_config
from tests.families.qwen_vl import _tokenizer_and_ids

PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
FPS = 2.0
HALF = [0.5, 0.5, 0.5]


def save_tiny_qwen3_vl(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    from vtc.synth.model import CHAT_TEMPLATE

    tokenizer, common = _tokenizer_and_ids()
    text = text_config(len(tokenizer)) | dict(
        head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6],
                                      "mrope_interleaved": True},
    )
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 1]),
        **common,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    sizes = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128 * 8}, patch_size=16)
    processor = Qwen3VLProcessor(
        Qwen2VLImageProcessor(**sizes, image_mean=HALF, image_std=HALF), tokenizer,
        Qwen3VLVideoProcessor(**sizes, cap_pixels_per_frame=True), chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def clip(frames: int, seed: int) -> np.ndarray:
    """A [T, 128, 128, 3] uint8 clip with noise everywhere (no ties between tokens) and a moving square."""
    from tests.families.base import video

    return video(frames, size=128, seed=seed, static=0.5)


def request(frames: np.ndarray, question: str = "What happens?") -> dict:
    """A vLLM request for one clip of consecutive frames at ``FPS``, the metadata transformers gets."""
    n = len(frames)
    meta = {"total_num_frames": n, "fps": FPS, "duration": n / FPS, "frames_indices": list(range(n)),
            "do_sample_frames": False}
    return {"prompt": PROMPT.format(question=question), "multi_modal_data": {"video": [(frames, meta)]}}


def hf_inputs(processor, frames: np.ndarray, question: str = "What happens?") -> dict:
    """The same clip and prompt through transformers' processor."""
    from tests.families.base import metadata

    return processor(text=[PROMPT.format(question=question)], videos=[frames], video_metadata=[metadata(len(frames), FPS)],
                     fps=FPS, do_sample_frames=False, return_tensors="pt")
