"""Save and load a trained compressor beside its PEFT LoRA adapter, from safetensors only.

An adapter directory holds PEFT's own ``adapter_config.json`` + ``adapter_model.safetensors`` (so
``PeftModel.from_pretrained`` loads it as usual) and vtc's ``vtc_compressor.json`` (kind,
constructor arguments, the base model it was trained on) + ``vtc_compressor.safetensors``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .base import TrainedCompressor
from .resampler import QueryResampler
from .scorer import LearnedScorer
from .vq import VQCodebook

KINDS: dict[str, type[TrainedCompressor]] = {c.kind: c for c in (LearnedScorer, QueryResampler, VQCodebook)}
COMPRESSOR_CONFIG = "vtc_compressor.json"
COMPRESSOR_WEIGHTS = "vtc_compressor.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "vtc_compressor.bin", "vtc_compressor.pt")


def build(kind: str, **config: Any) -> TrainedCompressor:
    """A fresh compressor of ``kind`` (scorer, resampler, vq)."""
    if kind not in KINDS:
        raise ValueError(f"unknown trained compressor {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind](**config)


def base_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What must match between the model an adapter was trained on and the one it is loaded into."""
    from ..patches import adapter_for

    text = adapter_for(model).text_config()
    return {
        "model_type": model.config.model_type, "hidden_size": int(text.hidden_size),
        "num_hidden_layers": int(text.num_hidden_layers), "vocab_size": int(text.vocab_size),
    }


def lora_target_modules(model: nn.Module) -> str:
    """A PEFT ``target_modules`` regex: the LLM's attention and MLP projections, never the vision tower."""
    from ..patches import adapter_for

    path = re.escape(adapter_for(model).language_model_path)
    return rf"{path}\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def save_compressor(compressor: TrainedCompressor, out: Path, base: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in compressor.state_dict().items()}
    save_file(weights, str(out / COMPRESSOR_WEIGHTS))
    record = {"kind": compressor.kind, "config": compressor.config(), "base_model": base, **(extra or {})}
    (out / COMPRESSOR_CONFIG).write_text(json.dumps(record, indent=2))


def read_record(path: Path) -> dict[str, Any]:
    """The adapter directory's vtc record, or a clear error for what is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"trained compressor {str(path)!r} is not a local directory (vtc never downloads): "
            "pass the directory `vtc train --out` wrote"
        )
    for name in PICKLE_FILES:
        if (path / name).exists():
            raise ValueError(f"{path / name} is a pickle file; vtc loads weights from safetensors only")
    missing = [n for n in (COMPRESSOR_CONFIG, COMPRESSOR_WEIGHTS, ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a vtc trained adapter: missing {', '.join(missing)}")
    try:
        record = json.loads((path / COMPRESSOR_CONFIG).read_text())
        kind, config = record["kind"], record["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path / COMPRESSOR_CONFIG} is corrupted ({err})") from None
    if kind not in KINDS:
        raise ValueError(f"{path / COMPRESSOR_CONFIG} names an unknown compressor kind {kind!r}")
    if not isinstance(config, dict):
        raise ValueError(f"{path / COMPRESSOR_CONFIG} is corrupted (config is not an object)")
    return record


def load_compressor(path: str | Path) -> TrainedCompressor:
    """The compressor saved in ``path``, in eval mode (hard top-k), weights checked key by key."""
    path = Path(path).expanduser()
    record = read_record(path)
    compressor = build(record["kind"], **record["config"])
    weights = _read_safetensors(path / COMPRESSOR_WEIGHTS)
    expected = compressor.state_dict()
    if set(weights) != set(expected):
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"{path / COMPRESSOR_WEIGHTS} does not match its config: missing {missing}, unexpected {unexpected}")
    wrong = [k for k in expected if weights[k].shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path / COMPRESSOR_WEIGHTS} does not match its config: wrong shapes for {wrong}")
    compressor.load_state_dict(weights)
    return compressor.eval()


def check_base(model: nn.Module, path: Path, record: dict[str, Any]) -> None:
    have, want = base_fingerprint(model), record.get("base_model", {})
    diff = {k: (want.get(k), have[k]) for k in have if want.get(k) != have[k]}
    if diff:
        described = ", ".join(f"{k}: adapter {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the adapter in {path} was trained on another base model ({described})")


def attach(model: nn.Module, path: str | Path) -> tuple[TrainedCompressor, Callable[[], None]]:
    """Load the LoRA adapter into ``model`` in place and the compressor beside it.

    Returns the compressor (on the model's device) and a function that unloads the LoRA layers,
    restoring the model's original modules.
    """
    from peft import PeftModel

    path = Path(path).expanduser()
    record = read_record(path)
    check_base(model, path, record)
    compressor = load_compressor(path)
    _read_safetensors(path / ADAPTER_WEIGHTS)  # a clear error before PEFT sees a broken file
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"cannot load the LoRA adapter in {path} into this model: {err}") from None
    device = next(model.parameters()).device
    return compressor.to(device), peft_model.unload


def _read_safetensors(file: Path) -> dict[str, Any]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{file} is corrupted or not a safetensors file ({err})") from None
