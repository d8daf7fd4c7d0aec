"""What a tiny test model is, how a family registers its builder, and the helpers builders share.

The Hub is unreachable in tests, so every tokenizer is a 256-symbol byte-level BPE vocabulary plus
the family's special tokens: a real tokenizer of the family's class, no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from vtc.synth.model import build_tokenizer as reference_tokenizer
from vtc.synth.model import byte_level_vocab


@dataclass(frozen=True)
class Builder:
    """How to build one family's tiny model, and what the suites must know of it before building it."""

    build: Callable[[], "Tiny"]
    rope_1d: bool  # the language model uses 1D RoPE (position ids may reach it as None)
    stacked_videos: bool  # the processor stacks videos into one [videos, frames, C, H, W] tensor (equal lengths)


BUILDERS: dict[str, Builder] = {}


def register(family: str, *, rope_1d: bool = False, stacked_videos: bool = False) -> Callable:
    """Register a tiny builder for ``family`` (its ``config.model_type``); every oracle and suite then runs on it."""

    def decorator(build: Callable[[], Tiny]) -> Callable[[], Tiny]:
        if family in BUILDERS:
            raise ValueError(f"two tiny builders for {family!r}")
        BUILDERS[family] = Builder(build, rope_1d, stacked_videos)
        return build

    return decorator


@dataclass
class Tiny:
    """A tiny model, its processor, and what a test needs to know of the family's video rows.

    ``frame_prefix_rows`` / ``video_suffix_rows``: placeholder rows per frame / per video that are
    not visual tokens (Video-LLaVA's [CLS], LLaVA-OneVision's newline); ``frame_rows``: placeholder
    rows of one frame's grid. Stated here from the processors' formulas, independently of the adapters.
    """

    family: str
    model: Any
    processor: Any
    video_placeholder: str = "<|vision_start|><|video_pad|><|vision_end|>"
    template: str = "<|im_start|>user\n{videos}{question}<|im_end|>\n<|im_start|>assistant\n"
    frame_rows: int = 0
    frame_prefix_rows: int = 0
    video_suffix_rows: int = 0
    make_inputs: Callable[..., Any] | None = None  # families whose processor needs its own prompt or batching
    # Frames per second stated with each clip (with VideoMetadata), where the processor would otherwise resample.
    fps: float | None = None

    @property
    def visual_token_id(self) -> int:
        from vtc.patches import adapter_for

        return adapter_for(self.model).visual_token_id()

    def inputs(self, videos: list, questions: list[str] | None = None, **kwargs: Any) -> dict:
        """Batch inputs through the real processor (left padding); an item is one clip or a list of clips."""
        per_prompt = [v if isinstance(v, list) else [v] for v in videos]
        questions = questions or ["What happens?"] * len(per_prompt)
        if self.make_inputs is not None:
            return self.make_inputs(self.processor, videos, questions, **kwargs)
        texts = [
            self.template.format(videos=self.video_placeholder * len(clips), question=q)
            for clips, q in zip(per_prompt, questions)
        ]
        flat = [clip for clips in per_prompt for clip in clips]
        self.processor.tokenizer.padding_side = "left"
        if self.fps is not None:
            kwargs = {"fps": self.fps, "do_sample_frames": False,
                      "video_metadata": [metadata(len(v), self.fps) for v in flat], **kwargs}
        return self.processor(text=texts, videos=flat, padding=True, return_tensors="pt", **kwargs)

    def batch_clips(self) -> list:
        """Two prompts with different numbers of visual tokens (so per-sample budgets differ)."""
        if BUILDERS[self.family].stacked_videos:
            return [[video(8), video(8, seed=2)], video(8, seed=1)]
        return [video(8), video(4, seed=1)]

    def visual_rows(self, inputs: dict, sample: int) -> torch.Tensor:
        """Prompt rows of one sample that are visual tokens (offered to methods), in order."""
        placeholders = inputs["input_ids"][sample] == self.visual_token_id
        rows = (placeholders & inputs["attention_mask"][sample].bool()).nonzero().flatten()
        if not self.frame_rows:
            return rows
        per_frame = self.frame_prefix_rows + self.frame_rows
        frame_block = inputs["pixel_values_videos"].shape[1] * per_frame
        offset = torch.arange(rows.numel()) % (frame_block + self.video_suffix_rows)
        return rows[(offset < frame_block) & (offset % per_frame >= self.frame_prefix_rows)]


def metadata(num_frames: int, fps: float = 2.0):
    """VideoMetadata of a clip whose frames are all the source's frames, at ``fps``."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=num_frames, fps=fps, frames_indices=list(range(num_frames)))



def build_tokenizer():
    """The byte-level Qwen tokenizer of the reference model, without its answer-word tokens."""
    return reference_tokenizer(words=())


def text_config(vocab_size: int, **extra: Any) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}, **extra,
    )


def byte_tokenizer(specials: tuple[str, ...], eos: str, named: dict[str, str]):
    """A byte-level ``Qwen2Tokenizer`` with ``specials`` appended; ``named`` become attributes (``tok.video_token``)."""
    from transformers import Qwen2Tokenizer

    vocab = byte_level_vocab()
    for token in specials:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=eos, pad_token=specials[0], extra_special_tokens=named)


def tiny_text(vocab_size: int, model_type: str) -> dict[str, Any]:
    return dict(
        model_type=model_type, vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )


TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14)


def chat_template(video_placeholder: str, turn_start: str, turn_end: str, assistant: str) -> str:
    """A minimal chat template in the family's format: the user's video then text, then the assistant cue."""
    return (
        f"{{% for message in messages %}}{turn_start}{{{{ message['role'] }}}}: "
        f"{{% for part in message['content'] %}}{{% if part['type'] == 'video' %}}{video_placeholder}"
        f"{{% elif part['type'] == 'text' %}}{{{{ part['text'] }}}}{{% endif %}}{{% endfor %}}{turn_end}{{% endfor %}}"
        f"{{% if add_generation_prompt %}}{assistant}{{% endif %}}"
    )


def video(num_frames: int = 8, size: int = 112, seed: int = 0, static: float = 0.8) -> np.ndarray:
    """A [T, H, W, 3] uint8 clip: a fixed background with per-frame noise and a moving square.

    ``static`` is the share of the background that stays (nearly) unchanged, so DTD-style methods
    have real redundancy to find.
    """
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, size=(size, size, 3)).astype(np.float32)
    frames = []
    for t in range(num_frames):
        frame = background + rng.normal(0, 4, size=background.shape)
        churn = rng.random((size, size)) > static
        frame[churn] = rng.integers(0, 256, size=(int(churn.sum()), 3))
        x = (t * 9) % (size - 24)
        frame[40:64, x : x + 24] = (255, 0, 0)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)
