"""vtc's variant of vLLM's Qwen3-VL: the same model, with each video's tokens compressed by a vtc method.

Qwen3-VL writes each frame group as ``<t seconds><vision_start>`` + its tokens + ``<vision_end>``, so a video's
placeholder run interleaves text with the visual tokens, and how many tokens each frame keeps is known only
once the method has run. The plugin does what vLLM's own pruning (EVS) does with that run: the prompt processor
lumps the video's ``ServingConfig.kept_count`` placeholders into the first frame and marks the whole run as
embeddings, and ``embed_multimodal`` fills it in the real layout (vLLM's ``_create_final_video_embeddings``):
each frame's timestamp and markers (text embeddings) around the tokens it kept. The run's length is all that
must be known in advance, and it is the uncompressed run's minus the dropped tokens.

Positions: the uncompressed prompt's (vLLM's own ``get_mrope_input_positions`` on it) at the rows that remain,
so text and kept tokens keep their original M-RoPE positions and decoding continues where the uncompressed
prompt would; vLLM and transformers 5.x agree for Qwen3-VL (each frame is a one-frame grid), so the
``positions`` option changes nothing here. As for Qwen2.5-VL (see :mod:`.qwen2_5_vl`) the positions call
encodes and selects, and ``embed_multimodal`` takes that selection (:mod:`.reuse`): one vision-tower pass per
video. The tower's deepstack features follow the kept tokens (a merged token takes its representative's, as in
``vtc.wrap``); methods see the main features only, as on transformers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import PlaceholderRange
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from ...patches.qwen_vl import DEFAULT_FPS
from .config import ServingConfig
from .reuse import SelectionCache, video_key
from .saliency import LastBlockQueriesKeys, video_saliency
from .select import keep
from .startup import model_config_entry, startup_config


def video_run(config: Any, tokenizer: Any, timestamps: Any, tokens_per_frame: list[int]) -> list[int]:
    """A video's placeholder run as vLLM's Qwen3-VL lays it out: per frame its timestamp, then its tokens
    between vision start and end."""
    return Qwen3VLMultiModalProcessor.get_video_repl(
        tokens_per_frame=tokens_per_frame, timestamps=timestamps, tokenizer=tokenizer,
        vision_start_token_id=config.vision_start_token_id, vision_end_token_id=config.vision_end_token_id,
        video_token_id=config.video_token_id,
    ).full


class VtcQwen3VLProcessor(Qwen3VLMultiModalProcessor):
    """vLLM's Qwen3-VL prompt processor, with each video's run holding exactly the tokens the method keeps."""

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Any, out_mm_kwargs: Any
    ) -> Sequence[PromptUpdate]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_config = self.info.get_hf_config()
        config = model_config_entry(hf_config)
        if config is None:
            return updates
        merge = self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size
        tokenizer = self.info.get_tokenizer()
        (video,) = (u for u in updates if u.modality == "video")

        def kept_run(item_idx: int) -> Any:
            item = out_mm_kwargs["video"][item_idx]
            t, h, w = (int(v) for v in item["video_grid_thw"].data)
            kept = config.kept_count((t, h // merge, w // merge))
            # every token of the run is an embedding slot: embed_multimodal lays the frames out once it has chosen
            return Qwen3VLMultiModalProcessor.get_video_repl(
                tokens_per_frame=[kept] + [0] * (t - 1), timestamps=item["timestamps"].data, tokenizer=tokenizer,
                vision_start_token_id=hf_config.vision_start_token_id,
                vision_end_token_id=hf_config.vision_end_token_id, video_token_id=hf_config.video_token_id,
            )

        return [u for u in updates if u.modality != "video"] + [
            PromptReplacement(modality="video", target=video.target, replacement=kept_run)
        ]


@MULTIMODAL_REGISTRY.register_processor(
    VtcQwen3VLProcessor, info=Qwen3VLProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class VtcQwen3VLForConditionalGeneration(Qwen3VLForConditionalGeneration):
    """Qwen3-VL whose videos enter the language model compressed by the configured vtc method."""

    def __init__(self, *, vllm_config: Any, prefix: str = "model") -> None:
        config = startup_config(vllm_config)  # refuses a bad or misplaced config before any weight loads
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtc: ServingConfig | None = config
        self.vtc_selections = SelectionCache()

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        if self.vtc is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        full: list[int] = []  # the prompt as it would be uncompressed
        remains: list[bool] = []  # its rows that the compressed prompt holds
        features, cursor = [], 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset, length = feature.mm_position.offset, feature.mm_position.length
            full += input_tokens[cursor:offset]
            remains += [True] * (offset - cursor)
            run, kept = input_tokens[offset : offset + length], [True] * length
            if feature.modality == "video":
                run, kept = self._select_run(feature.data)
            features.append(dataclasses.replace(feature, mm_position=PlaceholderRange(offset=len(full), length=len(run))))
            full += run
            remains += kept
            cursor = offset + length
        full += input_tokens[cursor:]
        remains += [True] * (len(input_tokens) - cursor)
        positions, _ = super().get_mrope_input_positions(full, features)
        if sum(remains) != len(input_tokens):
            raise RuntimeError(f"vtc: {sum(remains)} positions kept for a prompt of {len(input_tokens)} tokens")
        return positions[:, torch.tensor(remains)], int(positions.max()) + 1 - len(input_tokens)

    def _select_run(self, data: Any) -> tuple[list[int], list[bool]]:
        """Select one video's tokens (kept for ``embed_multimodal``); its uncompressed run and which rows remain."""
        pixels = data["pixel_values_videos"].data
        key = video_key(data["video_grid_thw"].data, self._seconds())
        _, source = self.vtc_selections.remember(pixels, key, self._select)
        (t, h, w), _ = key
        merge = self.visual.spatial_merge_size
        run = video_run(self.config, self._tokenizer, data["timestamps"].data, [h * w // merge**2] * t)
        kept = torch.zeros(t * h * w // merge**2, dtype=torch.bool)
        kept[source.cpu()] = True
        visual = torch.tensor(run) == self.config.video_token_id
        remains = torch.ones(len(run), dtype=torch.bool)
        remains[visual] = kept
        return run, remains.tolist()

    def embed_multimodal(self, **kwargs: object) -> Any:
        if self.vtc is None:
            return super().embed_multimodal(**kwargs)
        out: tuple[torch.Tensor, ...] = ()
        for modality, inputs in self._parse_and_validate_multimodal_inputs(**kwargs).items():
            if modality == "image":
                out += tuple(self._process_image_input(inputs))
                continue
            if inputs["type"] != "pixel_values_videos":
                raise ValueError("vtc: videos passed as precomputed embeddings cannot be compressed (their positions are chosen from pixels)")
            grids = inputs["video_grid_thw"]
            pixels = inputs["pixel_values_videos"].split(grids.prod(-1).tolist())
            merge = self.visual.spatial_merge_size
            for video_pixels, grid, timestamps in zip(pixels, grids, inputs["timestamps"]):
                key = video_key(grid, self._seconds())
                features, source = self.vtc_selections.selection(video_pixels, key, self._select)
                (t, h, w), _ = key
                per_frame = torch.bincount(source.cpu() // (h * w // merge**2), minlength=t).tolist()
                out += (self._create_final_video_embeddings(
                    video_embeddings=features, num_tokens_per_frame=per_frame, timestamps=timestamps,
                    video_grid_thw=[t, h, w], retention_mask=None,
                ),)
        return out

    def _seconds(self) -> float:
        """Seconds per temporal token that ``vtc.wrap`` assumes for Qwen3-VL (its processor's default 2 fps)."""
        return self.config.vision_config.temporal_patch_size / DEFAULT_FPS

    def _select(self, pixels: torch.Tensor, key: tuple[tuple[int, int, int], float]) -> tuple[torch.Tensor, torch.Tensor]:
        """One video's kept rows [K, D * (1 + deepstack levels)] in frame order and their indices among its
        T*H*W merged tokens (t-major raster). The method sees the main features (the first D columns)."""
        assert self.vtc is not None
        (t, h, w), seconds = key
        merge = self.visual.spatial_merge_size
        pixels, grid = pixels.to(self.visual.device), (t, h // merge, w // merge)
        saliency = None
        if "vision_saliency" in self.vtc.needs:
            with LastBlockQueriesKeys(self.visual) as read:
                embeds = self.visual(pixels, grid_thw=[[t, h, w]])
            saliency = video_saliency(read, None, (t, h, w), merge)
        else:
            embeds = self.visual(pixels, grid_thw=[[t, h, w]])
        features, source = keep(self.vtc, embeds[:, : self.visual_dim], grid, seconds, saliency)
        order = torch.argsort(source)  # the run is laid out frame by frame
        source = source[order]
        return torch.cat([features[order], embeds[source.to(embeds.device), self.visual_dim :]], dim=-1), source
