"""lmms-eval models that run a video LLM with vtc compression (registered by ``vtc.integrations.lmms_eval``).

* ``vtc``: any family vtc supports, loaded with transformers' Auto classes from a local checkpoint
  (default: the shipped reference model). Takes tasks whose ``doc_to_visual`` returns one video file
  path per question, as lmms-eval's built-in video tasks do; frames are decoded by ``vtc.video``
  (``num_frames`` evenly spaced, default 16, or ``fps`` instead) and prompts built with the
  checkpoint's chat template. Under ``accelerate launch`` each process takes ``cuda:<local rank>``.
* ``vtc_qwen2_5_vl`` / ``vtc_qwen3_vl``: lmms-eval's own Qwen chat wrappers, subclassed so their
  prompts, frame sampling (qwen-vl-utils) and pixel limits stay exactly theirs. Their simple and chat
  paths sample different frame counts, so compare a compressed run with a baseline of the same model id.

Every model takes ``method`` (a vtc name or spec; quote a spec that contains commas), ``retain`` or
``tokens``, ``scope`` and ``stats_file`` (JSON lines, one record per sample: visual tokens in and
kept, prefill ms, ms per vtc stage). These are taken out before the parent constructor sees the rest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as Qwen2_5_VLChat
from lmms_eval.models.chat.qwen3_vl import Qwen3_VL as Qwen3_VLChat
from tqdm.auto import tqdm

import vtc

from ..budget import Scope
from ..runner import build_inputs, default_model_path, load_model, resolve_local
from ..video import load_video
from .recording import SampleRecord, StatsRecorder, append_jsonl

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")


class VtcCompression:
    """What every vtc lmms-eval model shares: the compression in force and per-sample records.

    ``keep_loaded`` stops lmms-eval's ``clean()`` (run after every evaluation) from deleting the
    model, so ``vtc bench`` can evaluate many compressions on one loaded model.
    """

    compression: dict[str, Any] | None = None
    keep_loaded: bool = False

    def _init_vtc(self, model: torch.nn.Module, method: str | None, retain: float | None, tokens: int | None,
                  scope: Scope, stats_file: str | None) -> None:
        self._vtc_model = model
        self._recorder = StatsRecorder(model, getattr(model.config, "video_token_id", None))
        self.stats_file = stats_file
        self.vtc_records: list[SampleRecord] = []
        self.set_compression(method, retain=retain, tokens=tokens, scope=scope)

    def set_compression(self, method: str | None, *, retain: float | None = None, tokens: int | None = None,
                        scope: Scope = "video") -> None:
        """Compress with ``method`` from now on; ``None`` (or "none") runs the model uncompressed."""
        method = _unquote(method)
        if method in (None, "", "none"):
            if retain is not None or tokens is not None:
                raise ValueError("vtc: retain/tokens were given without a method; pass method=NAME or drop them")
            vtc.unwrap(self._vtc_model)
            self.compression = None
            return
        vtc.wrap(self._vtc_model, method, retain=retain, tokens=tokens, scope=scope)
        self.compression = {"method": method, "retain": retain, "tokens": tokens, "scope": scope}

    def _announce(self, task: str, split: str, doc_id: int) -> None:
        self._recorder.expect([{"task": task, "split": split, "doc_id": int(doc_id)}])

    def _collect(self) -> None:
        """Move the recorder's new records to ``vtc_records`` and the side file."""
        records = self._recorder.take()
        self.vtc_records.extend(records)
        if self.stats_file and records:
            append_jsonl(self.stats_file, records, compression=self.compression)

    def clean(self) -> None:
        if self.keep_loaded:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        self._recorder.remove()
        vtc.unwrap(self._vtc_model)
        del self._vtc_model, self._recorder
        super().clean()


class VtcModel(VtcCompression, lmms):
    """``--model vtc``: a local checkpoint of any vtc-supported family, one video per question."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        method: str | None = None,
        retain: float | None = None,
        tokens: int | None = None,
        scope: Scope = "video",
        num_frames: int | None = 16,
        fps: float | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        stats_file: str | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        from accelerate import Accelerator

        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            if torch.cuda.is_available():
                device = f"cuda:{self.accelerator.local_process_index}"
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        path = resolve_local(pretrained) if pretrained else default_model_path()
        self._model, self.processor = load_model(path, device=device, dtype=dtype,
                                                 attn_implementation=attn_implementation)
        self.num_frames, self.fps = (None, fps) if fps is not None else (num_frames, None)
        if str(batch_size) == "auto":
            raise ValueError("vtc: batch_size=auto is not supported; pass an integer")
        self.batch_size_per_gpu = int(batch_size)
        self.pretrained = str(path)
        self._init_vtc(self._model, method, retain, tokens, scope, stats_file)

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._model.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the vtc model answers generate_until tasks only (multiple-choice by generation)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the vtc model answers single-round generate_until tasks only")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        progress = tqdm(total=len(requests), desc="vtc responding", disable=self.rank != 0)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                texts = self._answer([requests[i].args for i in chunk])
                for i, text in zip(chunk, texts):
                    answers[i] = text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], requests[i].args[1]), text)
                progress.update(len(chunk))
        progress.close()
        self._collect()
        return [a if a is not None else "" for a in answers]

    def _answer(self, batch: list[tuple]) -> list[str]:
        videos = [load_video(self._video_path(args), num_frames=self.num_frames, fps=self.fps) for args in batch]
        inputs = build_inputs(self.processor, videos, [args[0] for args in batch]).to(self.device)
        generate_kwargs, stops = generation_kwargs(batch[0][1])
        for context, _, _, doc_id, task, split in batch:
            self._announce(task, split, doc_id)
        with torch.no_grad():
            out = self._model.generate(**inputs, **generate_kwargs)
        replies = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [truncate_at(reply, stops).strip() for reply in replies]

    def _video_path(self, args: tuple) -> str:
        _, _, doc_to_visual, doc_id, task, split = args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if (not isinstance(visuals, list) or len(visuals) != 1 or not isinstance(visuals[0], str)
                or not visuals[0].lower().endswith(VIDEO_SUFFIXES)):
            raise ValueError(
                f"the vtc model takes tasks whose doc_to_visual returns one video file path per question; "
                f"task {task!r} returned {_describe(visuals)} for doc {doc_id}"
            )
        return visuals[0]


class _VtcChat(VtcCompression):
    """Keeps an lmms-eval chat wrapper's own generate_until, and learns which docs each batch holds.

    The wrapper builds a batch's messages with each request's ``doc_to_messages`` right before it
    calls generate(), so wrapping those callables names the samples of the next prefill exactly.
    """

    def generate_until(self, requests: list[Instance]) -> list[Any]:
        originals = [request.arguments for request in requests]
        for request in requests:
            context, to_messages, gen_kwargs, doc_id, task, split = request.arguments
            request.arguments = (context, self._announcing(to_messages, task, split, doc_id), gen_kwargs, doc_id,
                                 task, split)
        try:
            return super().generate_until(requests)
        finally:
            for request, arguments in zip(requests, originals):
                request.arguments = arguments
            self._collect()

    def _announcing(self, to_messages: Callable, task: str, split: str, doc_id: int) -> Callable:
        def messages(doc: dict, *args: Any, **kwargs: Any) -> Any:
            self._announce(task, split, doc_id)
            return to_messages(doc, *args, **kwargs)

        return messages


class VtcQwen2_5_VL(_VtcChat, Qwen2_5_VLChat):
    """``--model vtc_qwen2_5_vl``: lmms-eval's Qwen2.5-VL chat wrapper plus vtc (default: the reference model)."""

    def __init__(self, pretrained: str | None = None, method: str | None = None, retain: float | None = None,
                 tokens: int | None = None, scope: Scope = "video", stats_file: str | None = None,
                 **kwargs: Any) -> None:
        path = resolve_local(pretrained) if pretrained else default_model_path()
        super().__init__(pretrained=str(path), **kwargs)
        self._init_vtc(self.model, method, retain, tokens, scope, stats_file)


class VtcQwen3_VL(_VtcChat, Qwen3_VLChat):
    """``--model vtc_qwen3_vl``: lmms-eval's Qwen3-VL chat wrapper plus vtc."""

    def __init__(self, pretrained: str | None = None, method: str | None = None, retain: float | None = None,
                 tokens: int | None = None, scope: Scope = "video", stats_file: str | None = None,
                 **kwargs: Any) -> None:
        if not pretrained:
            raise ValueError("vtc_qwen3_vl needs pretrained=PATH to a local Qwen3-VL checkpoint")
        super().__init__(pretrained=str(resolve_local(pretrained)), **kwargs)
        self._init_vtc(self.model, method, retain, tokens, scope, stats_file)


def generation_kwargs(task_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """generate() arguments from a task's ``generation_kwargs``, and its stop strings (``until``)."""
    kwargs = dict(task_kwargs or {})
    until = kwargs.get("until") or []
    stops = [until] if isinstance(until, str) else list(until)
    temperature = float(kwargs.get("temperature") or 0.0)
    out: dict[str, Any] = {
        "max_new_tokens": int(kwargs.get("max_new_tokens") or 16),
        "num_beams": int(kwargs.get("num_beams") or 1),
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        out["temperature"] = temperature
        if kwargs.get("top_p") is not None:
            out["top_p"] = float(kwargs["top_p"])
    return out, stops


def truncate_at(text: str, stops: list[str]) -> str:
    """``text`` up to the first stop string (lmms-eval's ``until``)."""
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def _unquote(value: str | None) -> str | None:
    """lmms-eval keeps the quotes around a quoted model_args value (``method='dtd(a=1,b=2)'``)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _describe(visuals: Any) -> str:
    if isinstance(visuals, list):
        kinds = ", ".join(type(v).__name__ if not isinstance(v, str) else repr(Path(v).name) for v in visuals[:3])
        return f"{len(visuals)} visual(s) [{kinds}{', ...' if len(visuals) > 3 else ''}]"
    return type(visuals).__name__
