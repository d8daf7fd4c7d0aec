"""What ``vtc.VideoProcessor`` must know about a family's Hugging Face processor to plan under a budget.

A family's adapter names its policy (``FamilyAdapter.processor_policy``); ``processor_policy_for``
finds it from the processor's class, since a processor carries no ``model_type``. The default here
fits processors that fix each frame's token count themselves (LLaVA, InternVL, SmolVLM,
VideoLLaMA3): the count is measured once per video size, plans choose frames only, and prompts go
through the processor one by one (several cannot batch clips of different lengths).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..select.base import UnitCost
from ..video import DecodedVideo

# (frames [U*tp, h, w, 3], temporal patch, question) -> (features [U, D], query [D])
Scorer = Callable[[np.ndarray, int, str], tuple[torch.Tensor, torch.Tensor]]


class ProcessorPolicy:
    """How one family's processor turns frames into visual tokens; subclasses override what differs."""

    # Class-name prefixes of the processors this policy is for (empty: the default for any processor).
    processor_prefixes: tuple[str, ...] = ()
    # True where the processor sizes frames from the pixels it gets, so a plan may trade resolution for frames.
    resizes_frames: bool = False
    # A prompt format with ``{question}`` for processors of this family that ship without a chat template.
    fallback_prompt: str | None = None
    # Why vtc.VideoProcessor needs ``model=`` for this processor ("" where it does not).
    needs_model: str = ""

    def __init__(self, processor: Any, model: Any = None) -> None:
        self.processor, self.model = processor, model
        self.temporal_patch = int(getattr(processor.video_processor, "temporal_patch_size", 1) or 1)
        self._measured: dict[tuple[int, int], tuple[int, int]] = {}

    @classmethod
    def handles(cls, processor: Any) -> bool:
        return bool(cls.processor_prefixes) and type(processor).__name__.startswith(cls.processor_prefixes)

    @property
    def name(self) -> str:
        return type(self.processor).__name__

    # -- prompts -----------------------------------------------------------------------------------
    def prompts(self, questions: Sequence[str]) -> list[str]:
        """One prompt per question with one video before it, in the processor's own chat template."""
        if getattr(self.processor, "chat_template", None):
            return [
                self.processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}],
                    tokenize=False, add_generation_prompt=True,
                )
                for q in questions
            ]
        if self.fallback_prompt is None:
            raise ValueError(
                f"{self.name} has no chat template; vtc writes each prompt with the processor's own template: "
                "set processor.chat_template (released checkpoints ship one)"
            )
        return [self.fallback_prompt.format(question=q) for q in questions]

    def process(self, videos: list[DecodedVideo], questions: list[str]) -> Any:
        """Model inputs for one video per question, left-padded together."""
        from ..collate import left_pad_collate
        from ..runner import build_inputs

        samples = [build_inputs(self.processor, [v], [q]) for v, q in zip(videos, questions)]
        return left_pad_collate(samples, self.processor.tokenizer.pad_token_id)

    # -- sizes and costs -----------------------------------------------------------------------------
    def frame_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """(h, w) to decode a frame at for this plan; the processor resizes it afterwards."""
        return height, width

    def cost(self, height: int, width: int, scales: tuple[float, ...]) -> UnitCost:
        per_unit = self.temporal_patch * self.measured_tokens(height, width)[0]
        return UnitCost(tokens_at=lambda scale: per_unit, scales=(1.0,), shares=False)

    def measured_tokens(self, height: int, width: int) -> tuple[int, int]:
        """(visual tokens per frame, visual tokens per video besides its frames) that the processor writes
        for frames of this size, from running it on one and two frames of noise (noise, so that a
        processor's own redundancy dropping, like VideoLLaMA3's, keeps every token: an upper bound)."""
        if (height, width) not in self._measured:
            counts, rng = [], np.random.default_rng(0)
            for n in (self.temporal_patch, 2 * self.temporal_patch):
                noise = DecodedVideo(
                    frames=rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
                    timestamps=np.arange(n, dtype=float), indices=np.arange(n), source_fps=1.0, total_frames=n,
                    backend="noise", requested_frames=None, clamped=False,
                )
                counts.append(self.placeholder_counts(self.process([noise], ["?"]))[0])
            per_frame = (counts[1] - counts[0]) // self.temporal_patch
            if per_frame <= 0:
                raise RuntimeError(f"{self.name} wrote no visual tokens per frame; cannot plan a budget")
            self._measured[(height, width)] = (per_frame, counts[0] - per_frame * self.temporal_patch)
        return self._measured[(height, width)]

    def placeholder_counts(self, inputs: Any) -> list[int]:
        """Visual placeholder tokens per prompt (video tokens, or image tokens where frames are images)."""
        ids = inputs["input_ids"]
        found = [int(i) for i in (getattr(self.processor, k, None) for k in ("video_token_id", "image_token_id"))
                 if i is not None and bool((ids == int(i)).any())]
        return [sum(int((row == i).sum()) for i in found) for row in ids]

    def visual_tokens(self, inputs: Any, videos: list[DecodedVideo]) -> list[int]:
        """Visual tokens of each prompt's frames (placeholders that belong to the video, not to a frame, excluded)."""
        extra = [self.measured_tokens(v.frames.shape[1], v.frames.shape[2])[1] for v in videos]
        return [n - e for n, e in zip(self.placeholder_counts(inputs), extra)]

    # -- after processing ----------------------------------------------------------------------------
    def finish(self, inputs: Any, group_times: list[torch.Tensor]) -> None:
        """Adjust the processed inputs for frames chosen at uneven times (in place); most processors write
        the real times themselves from ``VideoMetadata.frames_indices``."""

    def default_scorer(self) -> Scorer:
        """Frame features and question embedding for query-aware selectors when the caller passes no scorer."""
        raise NotImplementedError(
            f"the default scorer (the model's own vision tower) is not written for {self.name}: pass scorer=, "
            "or use vtc.wrap(model, 'query', ...), which scores every family at the language model"
        )
