"""Tiny random-initialised models of each supported family, with real processors built in code.

The Hub is unreachable in tests, so every tokenizer is a 256-symbol byte-level BPE vocabulary plus
the family's special tokens: a real tokenizer of the family's class, no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vtc.collate import left_pad_collate
from vtc.engine import cache_kwarg
from vtc.synth.model import CHAT_TEMPLATE, SPECIAL_TOKENS
from vtc.synth.model import build_tokenizer as reference_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "llava_next_video", "video_llava")
# Families whose language model uses 1D RoPE (position ids may reach it as None).
ROPE_1D_FAMILIES = ("llava_onevision", "llava_next_video", "video_llava")
# Families whose processor stacks videos into one [videos, frames, C, H, W] tensor: a batch needs equal frame counts.
STACKED_VIDEO_FAMILIES = ("llava_onevision", "llava_next_video", "video_llava")
FAMILIES += ("internvl", "smolvlm", "video_llama_3")
ROPE_1D_FAMILIES += ("internvl", "smolvlm", "video_llama_3")


def cache_arg(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Pass a KV cache under the name this transformers version takes (``cache`` from 5.24 on)."""
    return {cache_kwarg(model): cache}


def cache_of(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache`` from transformers 5.24 on)."""
    return output.cache if "cache" in output.keys() else output.past_key_values


def build_tokenizer():
    """The byte-level Qwen tokenizer of the reference model, without its answer-word tokens."""
    return reference_tokenizer(words=())


def _text_config(vocab_size: int, **extra: Any) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}, **extra,
    )


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
        if self.family.startswith("qwen"):
            kwargs = {"fps": 2.0, "do_sample_frames": False, "video_metadata": [_metadata(len(v)) for v in flat],
                      **kwargs}
        return self.processor(text=texts, videos=flat, padding=True, return_tensors="pt", **kwargs)

    def batch_clips(self) -> list:
        """Two prompts with different numbers of visual tokens (so per-sample budgets differ)."""
        if self.family in STACKED_VIDEO_FAMILIES:
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


def _metadata(num_frames: int):
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=num_frames, fps=2.0, frames_indices=list(range(num_frames)))


@lru_cache(maxsize=None)
def _build(family: str, seed: int) -> Tiny:
    torch.manual_seed(seed)
    if family in FRAME_FAMILY_BUILDERS:
        built = FRAME_FAMILY_BUILDERS[family]()
        built.model.eval()
        return built
    tokenizer = build_tokenizer()
    vocab_size = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    common = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    if family == "qwen2_vl":
        from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                                  Qwen2VLProcessor, Qwen2VLVideoProcessor)

        config = Qwen2VLConfig(
            text_config=_text_config(vocab_size),
            vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2),
            **common,
        )
        model = Qwen2VLForConditionalGeneration(config)
        sizes = dict(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
        processor = Qwen2VLProcessor(Qwen2VLImageProcessor(**sizes), tokenizer, Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=True),
                                     chat_template=CHAT_TEMPLATE)
    elif family == "qwen2_5_vl":
        from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                                  Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

        config = Qwen2_5_VLConfig(
            text_config=_text_config(vocab_size),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1], tokens_per_second=2),
            **common,
        )
        model = Qwen2_5_VLForConditionalGeneration(config)
        sizes = dict(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
        processor = Qwen2_5_VLProcessor(Qwen2VLImageProcessor(**sizes), tokenizer, Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=True),
                                        chat_template=CHAT_TEMPLATE)
    elif family == "qwen3_vl":
        from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                                  Qwen3VLProcessor, Qwen3VLVideoProcessor)

        config = Qwen3VLConfig(
            text_config=_text_config(vocab_size, head_dim=16),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                               deepstack_visual_indexes=[0, 1]),
            **common,
        )
        model = Qwen3VLForConditionalGeneration(config)
        sizes = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128 * 8}, patch_size=16)
        processor = Qwen3VLProcessor(Qwen2VLImageProcessor(**sizes), tokenizer, Qwen3VLVideoProcessor(**sizes, cap_pixels_per_frame=True),
                                     chat_template=CHAT_TEMPLATE)
    elif family in LLAVA_BUILDERS:
        return LLAVA_BUILDERS[family]()
    else:
        raise ValueError(f"no tiny builder for {family!r}")
    model.eval()
    return Tiny(family, model, processor)


def llava_tokenizer():
    """A byte-level ``Qwen2Tokenizer`` with the LLaVA placeholders ``<image>`` and ``<video>``."""
    from transformers import Qwen2Tokenizer

    from vtc.synth.model import byte_level_vocab

    vocab = byte_level_vocab()
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"):
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<image>", "<video>"]})
    return tokenizer


def llama_tokenizer():
    """A real ``LlamaTokenizer``: byte-fallback pieces for all 256 bytes, the metaspace, ``<image>``, ``<video>``."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token in ("\u2581", "<image>", "<video>", "<pad>"):
        vocab[token] = len(vocab)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tokenizer


LLAMA_TEMPLATE = "USER: {videos}{question} ASSISTANT:"


def _clip_vision(image_size: int = 56) -> dict[str, Any]:
    return dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, patch_size=14, image_size=image_size, projection_dim=32)


def _llava_text_config(model_type: str, vocab_size: int) -> dict[str, Any]:
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    return {**_text_config(vocab_size), "model_type": model_type, "rope_parameters": rope}


def _llava_ids(tokenizer) -> dict[str, int]:
    return dict(image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                video_token_index=tokenizer.convert_tokens_to_ids("<video>"), tie_word_embeddings=True)


def _llava_onevision() -> Tiny:
    """SigLIP 56 px / patch 14 (4x4 patches, pooled to 2x2 per frame) and a Qwen2 language model."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tokenizer = llava_tokenizer()
    config = LlavaOnevisionConfig(
        text_config=_llava_text_config("qwen2", len(tokenizer)),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, patch_size=14, image_size=56, vision_use_head=False),
        vision_feature_layer=-1, image_grid_pinpoints=[[56, 56]], **_llava_ids(tokenizer),
    )
    size = {"height": 56, "width": 56}
    processor = LlavaOnevisionProcessor(
        LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[56, 56]]), tokenizer,
        LlavaOnevisionVideoProcessor(size=size), num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=_chat_template("<video>", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    return Tiny("llava_onevision", model, processor, video_placeholder="<video>", frame_rows=4, video_suffix_rows=1)


def _llava_next_video() -> Tiny:
    """CLIP 56 px / patch 14 (4x4 patches, average-pooled to 2x2 per frame) and a Llama language model."""
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor)

    tokenizer = llama_tokenizer()
    config = LlavaNextVideoConfig(
        text_config=_llava_text_config("llama", len(tokenizer)), vision_config=_clip_vision(),
        vision_feature_layer=-2, image_grid_pinpoints=[[56, 56]], **_llava_ids(tokenizer),
    )
    sizes = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaNextVideoProcessor(
        LlavaNextVideoVideoProcessor(**sizes), LlavaNextImageProcessor(**sizes, image_grid_pinpoints=[[56, 56]]),
        tokenizer, patch_size=14, vision_feature_select_strategy="default",
        chat_template=_chat_template("<video>", "", "\n", "ASSISTANT:"),
    )
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    return Tiny("llava_next_video", model, processor, video_placeholder="<video>", template=LLAMA_TEMPLATE,
                frame_rows=4)


def _video_llava() -> Tiny:
    """CLIP 56 px / patch 14: per frame the [CLS] and 4x4 patches (17 rows); a Llama language model."""
    from transformers import (VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor,
                              VideoLlavaProcessor, VideoLlavaVideoProcessor)

    tokenizer = llama_tokenizer()
    config = VideoLlavaConfig(
        text_config=_llava_text_config("llama", len(tokenizer)), vision_config=_clip_vision(),
        vision_feature_layer=-2, **_llava_ids(tokenizer),
    )
    sizes = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = VideoLlavaProcessor(
        VideoLlavaImageProcessor(**sizes), VideoLlavaVideoProcessor(**sizes), tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_chat_template("<video>", "", "\n", "ASSISTANT:"),
    )
    model = VideoLlavaForConditionalGeneration(config).eval()
    return Tiny("video_llava", model, processor, video_placeholder="<video>", template=LLAMA_TEMPLATE,
                frame_rows=16, frame_prefix_rows=1)


LLAVA_BUILDERS = {"llava_onevision": _llava_onevision, "llava_next_video": _llava_next_video, "video_llava": _video_llava}


def _stages(family: str) -> tuple[str, ...]:
    from vtc.patches import ADAPTERS
    from vtc.support import supported_stages

    (adapter,) = [a for a in ADAPTERS if family in a.model_types]
    return supported_stages(adapter)


def unsupported_stages(family: str, spec: str) -> list[str]:
    """Stages of ``spec`` that vtc refuses on ``family`` (the suites check the refusal instead)."""
    import vtc

    return [s.method.stage for s in vtc.Pipeline.parse(spec).steps if s.method.stage not in _stages(family)]


def families_with(stage: str) -> tuple[str, ...]:
    """The test families whose adapter can hook ``stage``."""
    return tuple(f for f in FAMILIES if stage in _stages(f))


def byte_tokenizer(specials: tuple[str, ...], eos: str, named: dict[str, str]):
    """A byte-level ``Qwen2Tokenizer`` with ``specials`` appended; ``named`` become attributes (``tok.video_token``)."""
    from transformers import Qwen2Tokenizer

    from vtc.synth.model import byte_level_vocab

    vocab = byte_level_vocab()
    for token in specials:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=eos, pad_token=specials[0], extra_special_tokens=named)


def _tiny_text(vocab_size: int, model_type: str) -> dict[str, Any]:
    return dict(
        model_type=model_type, vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )


TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14)


def _internvl() -> Tiny:
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
        text_config=_tiny_text(len(tokenizer), "qwen2"),
        vision_config=dict(TINY_VISION, image_size=112, initializer_range=0.3),
        image_token_id=tokenizer.context_image_token_id, image_seq_length=16, downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    sizes = dict(size={"height": 112, "width": 112})
    processor = InternVLProcessor(
        GotOcr2ImageProcessor(**sizes), tokenizer, InternVLVideoProcessor(**sizes), image_seq_length=16,
        chat_template=_chat_template("<video>\n", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
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


def _smolvlm() -> Tiny:
    """SmolVLM: 112 px frames, 14 px patches, scale factor 2: 4x4 = 16 tokens per frame (64 in SmolVLM2)."""
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)

    tokenizer = byte_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
         "<image>", "<video>"), "<end_of_utterance>",
        {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>", "global_image_token": "<global-img>",
         "video_token": "<video>", "end_of_utterance_token": "<end_of_utterance>"},
    )
    text = dict(_tiny_text(len(tokenizer), "llama"), pad_token_id=tokenizer.pad_token_id)
    config = SmolVLMConfig(
        text_config=text, vision_config=dict(TINY_VISION, image_size=112), scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    sizes = dict(size={"longest_edge": 112}, max_image_size={"longest_edge": 112})
    processor = SmolVLMProcessor(
        SmolVLMImageProcessor(**sizes, do_image_splitting=False), tokenizer, SmolVLMVideoProcessor(**sizes),
        image_seq_len=16,
        chat_template=_chat_template("<video>", "<|im_start|>", "<end_of_utterance>\n", "Assistant:"),
    )

    def make_inputs(processor: Any, videos: list[np.ndarray], questions: list[str], **kwargs: Any) -> Any:
        # SmolVLMProcessor writes the batch's padded frame count into every prompt ("eight frames" for a
        # four-frame clip), so batched prompts differ from single ones: run it per sample and collate.
        samples = [
            processor(text=[f"<|im_start|>User: <video>{q}<end_of_utterance>\nAssistant:"], videos=[v],
                      video_metadata=[_metadata(len(v))], do_sample_frames=False, return_tensors="pt", **kwargs)
            for v, q in zip(videos, questions)
        ]
        return left_pad_collate(samples, processor.tokenizer.pad_token_id)

    return Tiny("smolvlm", SmolVLMForConditionalGeneration(config), processor, make_inputs=make_inputs)


def _video_llama_3() -> Tiny:
    """VideoLLaMA3: 112 px frames, 14 px patches, merge 2: 4x4 = 16 tokens per frame, built-in compression on."""
    from transformers import (VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3ImageProcessor,
                              VideoLlama3Processor, VideoLlama3VideoProcessor)

    tokenizer = build_tokenizer()
    config = VideoLlama3Config(
        text_config=_tiny_text(len(tokenizer), "qwen2"), vision_config=TINY_VISION,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"), tie_word_embeddings=True,
    )
    # The video processor divides longest_edge by the frame count: room for 16 frames of 112x112.
    processor = VideoLlama3Processor(
        VideoLlama3ImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}), tokenizer,
        VideoLlama3VideoProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112 * 16}),
        chat_template=_chat_template("<|video_pad|>\n", "<|im_start|>", "<|im_end|>\n", "<|im_start|>assistant\n"),
    )

    def make_inputs(processor: Any, videos: list[np.ndarray], questions: list[str], **kwargs: Any) -> Any:
        processor.tokenizer.padding_side = "left"
        texts = [f"<|im_start|>user\n<|video_pad|>\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
        return processor(text=texts, videos=videos, video_metadata=[_metadata(len(v)) for v in videos],
                         do_sample_frames=False, padding=True, return_tensors="pt", **kwargs)

    return Tiny("video_llama_3", VideoLlama3ForConditionalGeneration(config), processor, make_inputs=make_inputs)


def _chat_template(video_placeholder: str, turn_start: str, turn_end: str, assistant: str) -> str:
    """A minimal chat template in the family's format: the user's video then text, then the assistant cue."""
    return (
        f"{{% for message in messages %}}{turn_start}{{{{ message['role'] }}}}: "
        f"{{% for part in message['content'] %}}{{% if part['type'] == 'video' %}}{video_placeholder}"
        f"{{% elif part['type'] == 'text' %}}{{{{ part['text'] }}}}{{% endif %}}{{% endfor %}}{turn_end}{{% endfor %}}"
        f"{{% if add_generation_prompt %}}{assistant}{{% endif %}}"
    )


FRAME_FAMILY_BUILDERS: dict[str, Callable[[], Tiny]] = {
    "internvl": _internvl, "smolvlm": _smolvlm, "video_llama_3": _video_llama_3,
}


def tiny(family: str, seed: int = 0) -> Tiny:
    """A cached tiny model + processor; callers must not leave it wrapped (tests unwrap in finally)."""
    return _build(family, seed)


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


def write_mp4(path, frames: np.ndarray, fps: int = 4) -> None:
    """Encode [T, H, W, 3] uint8 frames as an H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def damage_mp4(path, first: int, count: int, seed: int = 0) -> None:
    """Overwrite the middle half of ``count`` NAL units of an mp4 from ``first`` on with random bytes.

    The 4-byte length before each NAL unit stays, so demuxers and decoders still walk the stream and
    decode every frame, concealing the errors: the damage FFmpeg prints to stderr and otherwise hides.
    """
    data = bytearray(Path(path).read_bytes())
    box = data.find(b"mdat")
    end, position, units = box - 4 + int.from_bytes(data[box - 4 : box], "big"), box + 4, []
    while position + 4 <= end:
        length = int.from_bytes(data[position : position + 4], "big")
        units.append((position + 4, length))
        position += 4 + length
    rng = np.random.default_rng(seed)
    for start, length in units[first : first + count]:
        lo, hi = start + 1 + length // 4, start + 1 + 3 * length // 4
        data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
