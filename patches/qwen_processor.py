"""The Qwen VL processors under ``vtc.VideoProcessor``: they size frames from the pixels they get.

So a plan may trade resolution for frames (each scale snapped to multiples of patch x merge within
the processor's pixel limits, as the processor itself snaps), token counts follow from
``video_grid_thw``, and a batch of clips of different lengths goes through the processor at once.
Qwen2.5-VL spaces temporal ids evenly, so its policy rebuilds ``position_ids`` from the selected
frames' real times; Qwen2-VL's temporal ids count frame groups and carry no time, and Qwen3-VL
writes timestamps as text from ``frames_indices``, so theirs need nothing after processing.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..select.base import UnitCost
from ..video import DecodedVideo
from .processor_policy import ProcessorPolicy, Scorer

# Used when a Qwen processor ships without a chat template: the Qwen VL chat format.
QWEN_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
)


class QwenProcessorPolicy(ProcessorPolicy):
    processor_prefixes = ("Qwen2VL", "Qwen3VL")
    resizes_frames = True
    fallback_prompt = QWEN_PROMPT

    def __init__(self, processor: Any, model: Any = None) -> None:
        super().__init__(processor, model)
        video = processor.video_processor
        self.merge = int(getattr(video, "merge_size", 1))
        self.factor = int(video.patch_size) * self.merge
        self.min_pixels = int(video.size["shortest_edge"])
        self.max_pixels = int(video.size["longest_edge"])

    def process(self, videos: list[DecodedVideo], questions: list[str]) -> Any:
        from ..runner import build_inputs

        return build_inputs(self.processor, videos, questions)

    def frame_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The size the processor keeps for a frame, after first scaling the frame it would produce by ``scale``."""
        h, w = self._snap(height, width)
        return self._snap(h * scale, w * scale) if scale != 1.0 else (h, w)

    def _snap(self, height: float, width: float) -> tuple[int, int]:
        f = self.factor
        h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return int(h), int(w)

    def cost(self, height: int, width: int, scales: tuple[float, ...]) -> UnitCost:
        def tokens_at(scale: float) -> int:
            h, w = self.frame_size(height, width, scale)
            return (h // self.factor) * (w // self.factor)

        return UnitCost(tokens_at=tokens_at, scales=scales, shares=False)

    def visual_tokens(self, inputs: Any, videos: list[DecodedVideo]) -> list[int]:
        return [int(t * h * w) // self.merge**2 for t, h, w in inputs["video_grid_thw"].tolist()]

    def default_scorer(self) -> Scorer:
        if self.model is None:
            raise ValueError("query-aware selection scores frames against the question: pass model= (its own "
                             "vision tower and text embeddings are the default scorer) or scorer=")
        return qwen_model_scorer(self.model, self.processor)


class Qwen25ProcessorPolicy(QwenProcessorPolicy):
    processor_prefixes = ("Qwen2_5_VL",)
    needs_model = (
        "Qwen2.5-VL assumes evenly spaced frames; pass model= so vtc.VideoProcessor can rebuild "
        "the temporal positions of the selected frames from their real times"
    )

    def finish(self, inputs: Any, group_times: list[torch.Tensor]) -> None:
        from .qwen_select import positions_at_times

        inputs["position_ids"] = positions_at_times(self.model, inputs, group_times)


def qwen_model_scorer(model: Any, processor: Any, chunk: int = 256) -> Scorer:
    """Pooled visual features of each frame group, through the adapter's video encoder, and the pooled
    question embedding, both from ``model`` itself."""
    from . import adapter_for

    adapter = adapter_for(model)
    encode = getattr(adapter.base_model(), adapter.video_encoder)

    def score(thumbs: np.ndarray, temporal_patch: int, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        pad = (-len(thumbs)) % temporal_patch
        frames = np.concatenate([thumbs, np.repeat(thumbs[-1:], pad, axis=0)]) if pad else thumbs
        pooled = []
        with torch.no_grad():
            for start in range(0, len(frames), chunk * temporal_patch):
                part = frames[start : start + chunk * temporal_patch]
                batch = processor.video_processor(videos=[part], do_sample_frames=False, return_tensors="pt")
                grid = batch["video_grid_thw"].to(device)
                out = encode(batch["pixel_values_videos"].to(device), grid, return_dict=True)
                feats = torch.cat(out.pooler_output).float()
                groups = int(grid[0, 0])
                pooled.append(feats.view(groups, -1, feats.shape[-1]).mean(dim=1))
            ids = processor.tokenizer(question, return_tensors="pt")["input_ids"].to(device)
            query = model.get_input_embeddings()(ids)[0].float().mean(dim=0)
        return torch.cat(pooled).cpu(), query.cpu()

    return score
