"""Argument checks that need no model: the CLI runs them before it loads a model or decodes a video, and
the library functions behind it (``load_model``, ``make_dataset``, ``evaluate``, ``TrainConfig``) run the
same ones. Only the CUDA/MPS availability check imports torch, and only when such a device is asked for."""
from __future__ import annotations

import importlib.util
import math
import numbers
import os
import re
from pathlib import Path

from .budget import Budget
from .spec import parse_spec, trained_dir

DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2")
REFERENCE_MODEL = Path(__file__).resolve().parent / "assets" / "reference-model"
_DEVICE_RE = re.compile(r"(?P<kind>cuda|mps)(?::(?P<index>\d+))?")


def at_least(name: str, value: object, low: int) -> None:
    """``value`` must be an integer >= ``low`` (a bool is refused: Python counts it as an int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def non_negative(name: str, value: object) -> None:
    """``value`` must be a finite number >= 0 (learning rates, loss weights)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def positive(name: str, value: object) -> None:
    """``value`` must be a finite number > 0 (frame rates)."""
    non_negative(name, value)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def check_attn(attn: str | None) -> None:
    """A known attention implementation whose package is installed (flash-attention is optional)."""
    if attn is None:
        return
    if attn not in ATTENTION:
        raise ValueError(f"unknown attention implementation {attn!r}; choose one of {', '.join(ATTENTION)}")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention flash_attention_2 needs the flash-attn package, which is not installed; use sdpa")


def check_device(device: str | None) -> None:
    """auto, cpu, cuda[:N] or mps[:N]; an accelerator must be present (torch is imported only then)."""
    if device in (None, "auto", "cpu"):
        return
    match = _DEVICE_RE.fullmatch(device)
    if match is None:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    import torch

    if match["kind"] == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} is not available on this machine; use cpu")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"device {device!r}: no CUDA GPU is available on this machine; use cpu (or auto)")
    if match["index"] is not None and int(match["index"]) >= count:
        raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")


def check_video(path: str | Path) -> Path:
    """An existing video file (checked before any model is loaded)."""
    video = Path(path).expanduser()
    if not video.is_file():
        raise FileNotFoundError(f"video {str(path)!r} does not exist" if not video.exists() else f"video {str(path)!r} is not a file")
    return video


def check_input_dir(path: str | Path, what: str) -> Path:
    """An existing local directory (data sets; vtc never downloads)."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is not a local directory")
    return directory


def check_output_file(path: str | Path, what: str) -> Path:
    """A file that can be written: not a directory, and its nearest existing parent is a writable directory."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a file name")
    _writable_parent(out, what)
    return out


def check_output_dir(path: str | Path, what: str) -> Path:
    """A directory that exists or can be created: not a file, nor below one."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a directory")
    _writable_parent(out, what)
    return out


def _writable_parent(path: Path, what: str) -> None:
    """The path itself if it exists, else its nearest existing parent, must be writable (and a directory)."""
    target = path.absolute()
    existing = target if target.exists() else next(p for p in target.parents if p.exists())
    if existing != target and not existing.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{what} {str(path)!r} cannot be written: {existing} is not writable")


def default_model_path() -> Path:
    """The reference model shipped inside the package (trained on vtc's synthetic benchmark)."""
    if not (REFERENCE_MODEL / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped reference model is missing from {REFERENCE_MODEL}; pass --model PATH to a local checkpoint"
        )
    return REFERENCE_MODEL


def resolve_local(path: str | Path) -> Path:
    """A local checkpoint directory, or an error that says why a hub id cannot work here."""
    local = Path(path).expanduser()
    if local.is_dir() and (local / "config.json").is_file():
        return local
    if local.exists():
        raise FileNotFoundError(f"{local} is not a transformers checkpoint (no config.json inside)")
    raise FileNotFoundError(
        f"model {str(path)!r} is not a local directory. vtc runs offline and never downloads: "
        "download the checkpoint elsewhere (e.g. `huggingface-cli download`) and pass its local path"
    )


def model_path(path: str | Path | None) -> Path:
    """``--model``: a local checkpoint, or the shipped reference model when none is given."""
    return resolve_local(path) if path else default_model_path()


def check_method_syntax(method: str | None, retain: float | None, tokens: int | None) -> Budget:
    """The budget and the spec's grammar, before torch is imported; ``vtc.pipeline.check_method`` then
    checks names, knob types and per-step budgets against the registry."""
    budget = Budget(retain=retain, tokens=tokens)
    if method is not None and trained_dir(method) is None:
        parse_spec(method)
    return budget
