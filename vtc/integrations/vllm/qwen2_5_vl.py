"""vtc's variant of vLLM's Qwen2.5-VL: the same model, with each video's tokens compressed by a vtc method.

Three points of vLLM's Qwen2.5-VL change, each in a subclass (nothing of vLLM is patched):
* the prompt processor gives each video a placeholder run of exactly ``ServingConfig.kept_count`` tokens;
* ``get_mrope_input_positions`` gives text the positions it has in the uncompressed prompt and kept tokens
  their original (t, h, w) positions;
* ``embed_multimodal`` returns each video's kept (or merged) features.
vLLM asks for a prompt's positions when the scheduler first hands the request to the model runner, before its
videos are encoded, and its hook for positions of pruned tokens (``recompute_mrope_positions``) is never called
by the CPU model runner of vLLM 0.32 (``CPUModelRunner.load_model`` leaves ``is_multimodal_pruning_enabled``
off: that is why EVS crashes on CPU). So the positions call selects: it encodes each video with vLLM's vision
tower and runs the configured ``vtc.methods`` steps through ``vtc.engine.steps.run_step`` (the function
``vtc.wrap`` runs them with), and keeps the result (:mod:`.reuse`) for ``embed_multimodal``, which the runner
calls for the same videos in the same step: the vision tower runs once per video. Only a video the positions
call did not leave there (a dropped entry) is encoded again, with the same inputs and so the same choice.
Without a ``vtc`` entry in the model's config every method is vLLM's own.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from .config import ServingConfig
from .positions import MediaItem, grid_positions, prompt_positions
from .reuse import SelectionCache, video_key
from .saliency import LastBlockQueriesKeys, video_saliency
from .select import keep
from .startup import model_config_entry, startup_config


class VtcQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    """vLLM's Qwen2.5-VL prompt processor, with each video's placeholder run sized to what the method keeps."""

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Any, out_mm_kwargs: Any
    ) -> Sequence[PromptUpdate]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        config = model_config_entry(self.info.get_hf_config())
        if config is None:
            return updates
        video_token = self.info.get_tokenizer().get_vocab()[self.info.get_hf_processor(**hf_processor_mm_kwargs).video_token]
        merge = self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size

        def kept_run(item_idx: int) -> list[int]:
            t, h, w = (int(v) for v in out_mm_kwargs["video"][item_idx]["video_grid_thw"].data)
            return [video_token] * config.kept_count((t, h // merge, w // merge))

        return [u for u in updates if u.modality != "video"] + [
            PromptReplacement(modality="video", target=[video_token], replacement=kept_run)
        ]


@MULTIMODAL_REGISTRY.register_processor(
    VtcQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class VtcQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL whose videos enter the language model compressed by the configured vtc method."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        config = startup_config(vllm_config)  # refuses a bad or misplaced config before any weight loads
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtc: ServingConfig | None = config
        self.vtc_selections = SelectionCache()

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        if self.vtc is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        features = sorted(mm_features, key=lambda f: f.mm_position.offset)
        items = []
        for feature, (offset, t, h, w, t_factor) in zip(features, self.iter_mm_grid_thw(mm_features)):
            relative = grid_positions(t, h, w, t_factor)
            if feature.modality == "video":
                data = feature.data
                pixels = data["pixel_values_videos"].data
                seconds = data["second_per_grid_ts"].data if data.get("second_per_grid_ts") else None
                key = video_key(data["video_grid_thw"].data, None if seconds is None else float(seconds.reshape(-1)[0]))
                _, source = self.vtc_selections.remember(pixels, key, self._select)
                kept = relative[:, source.cpu().numpy()]
            else:
                kept = relative
            items.append(MediaItem(offset, feature.mm_position.length, relative, h, w, kept))
        positions, delta = prompt_positions(len(input_tokens), items, self.vtc.positions)
        return torch.from_numpy(positions), delta

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
            seconds = inputs.get("second_per_grid_ts")
            pixels = inputs["pixel_values_videos"].split(grids.prod(-1).tolist())
            for i, (video_pixels, grid) in enumerate(zip(pixels, grids)):
                key = video_key(grid, None if seconds is None else float(seconds[i].reshape(-1)[0]))
                out += (self.vtc_selections.selection(video_pixels, key, self._select)[0],)
        return out

    def _select(self, pixels: torch.Tensor, key: tuple[tuple[int, int, int], float]) -> tuple[torch.Tensor, torch.Tensor]:
        """One video's kept features [K, D] and their indices among its T*H*W tokens (t-major raster)."""
        assert self.vtc is not None
        (t, h, w), seconds = key
        merge = self.visual.spatial_merge_size
        pixels, grid = pixels.to(self.visual.device), (t, h // merge, w // merge)
        if "vision_saliency" not in self.vtc.needs:
            return keep(self.vtc, self.visual(pixels, grid_thw=[[t, h, w]]), grid, seconds)
        metadata = self.visual.prepare_encoder_metadata([[t, h, w]])  # what the tower computes, kept for its window order
        with LastBlockQueriesKeys(self.visual) as read:
            embeds = self.visual(pixels, grid_thw=[[t, h, w]], encoder_metadata=metadata)
        return keep(self.vtc, embeds, grid, seconds, video_saliency(read, metadata["window_index"], (t, h, w), merge))

