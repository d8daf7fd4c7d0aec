"""Where the plugin's configuration lives in vLLM, and the checks made while the engine starts."""
from __future__ import annotations

from typing import Any

from .config import KEY, ServingConfig, parse

HOW = (
    "pass it as hf_overrides={'vtc': {...}} (vllm serve: --hf-overrides '{\"vtc\": {...}}'): vLLM 0.32 hands "
    "multimodal prompt processors, which size each video's placeholder run, only the model's config"
)


def model_config_entry(hf_config: Any) -> ServingConfig | None:
    """The parsed ``vtc`` entry of the model's (Hugging Face) config, None when there is none."""
    return parse(getattr(hf_config, KEY, None))


def startup_config(vllm_config: Any) -> ServingConfig | None:
    """The configuration the model runs with; refuses it in ``additional_config`` (the prompt processor could
    not see it there and would allot every video token) and next to vLLM's own video pruning."""
    additional = getattr(vllm_config, "additional_config", None)
    if isinstance(additional, dict) and KEY in additional:
        raise ValueError(f"vtc: found the vtc configuration in additional_config; {HOW}")
    config = model_config_entry(vllm_config.model_config.hf_config)
    mm_config = vllm_config.model_config.multimodal_config
    if config is not None and mm_config is not None and mm_config.get_video_pruning_spec() is not None:
        raise ValueError("vtc: a vtc method and vLLM's own video pruning (video_pruning_rate) cannot both run")
    tensor_parallel = getattr(vllm_config.parallel_config, "tensor_parallel_size", 1)
    if config is not None and "vision_saliency" in config.needs and tensor_parallel > 1:
        raise ValueError(
            f"vtc: {config.pipeline.describe()} ranks by the vision tower's attention, whose heads tensor parallelism "
            f"splits over {tensor_parallel} ranks (each would rank by its own heads); run it with tensor_parallel_size=1"
        )
    return config
