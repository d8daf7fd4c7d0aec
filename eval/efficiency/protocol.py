"""Timing and memory protocol for a noisy shared machine.

One thread, configurations interleaved round-robin after a warm-up round, median of the repeats,
CPU time (``time.process_time``: this process only, so other users' load shows less) beside wall
time. On CUDA, intervals come from ``torch.cuda.Event`` pairs and memory from the allocator's peak.
"""
from __future__ import annotations

import ctypes
import gc
import statistics
import time
from pathlib import Path
from typing import Callable, Hashable

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


class Stopwatch:
    """Named time marks; ``ms(a, b)`` gives (wall ms, CPU ms) between two marks.

    On CUDA the wall interval is the GPU's: an event recorded on the device's current stream at each
    mark (kernels are queued asynchronously, so the host clock would time the launches, not the work);
    the CPU figure is then the host's launch time.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.marks: dict[str, tuple] = {}

    def mark(self, name: str) -> None:
        event = None
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
        self.marks[name] = (time.perf_counter(), time.process_time(), event)

    def ms(self, start: str, end: str) -> tuple[float, float]:
        (w0, c0, e0), (w1, c1, e1) = self.marks[start], self.marks[end]
        if self.cuda:
            e1.synchronize()
            return e0.elapsed_time(e1), (c1 - c0) * 1000.0
        return (w1 - w0) * 1000.0, (c1 - c0) * 1000.0


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def release_free_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc ``malloc_trim``), so that the resident set
    before a block holds live data only and the block's high-water mark shows its own peak; without
    it, pages an earlier configuration freed are reused unseen and the peak reads near zero."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak then counts only growth of the heap
        pass


class PeakMemory:
    """Peak memory added by a block, in MiB.

    CUDA: ``max_memory_allocated`` minus what was allocated before (tensors only). CPU: the kernel's
    resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) minus the resident set
    before the block, after freed heap pages were returned (:func:`release_free_memory`): every page
    the block touched, tensors and allocator caches included.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            CLEAR_REFS.write_text("5")
            self.before = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        self.mib = (peak - self.before) / 2**20


def interleaved(configs: dict[Hashable, Callable[[], dict]], repeats: int, warmup: int = 1,
                progress: Callable[[str], None] = print, warm: list[Hashable] | None = None) -> dict[Hashable, dict]:
    """Run every configuration once per round, ``warmup`` rounds discarded; median of each field.

    ``warm`` names configurations to run once (discarded) before the rounds, instead of warm-up rounds:
    at realistic sizes a full warm-up round costs as much as a measured one, while first-call costs
    (lazy imports, allocator growth) need only one cheap call of each method.
    """
    samples: dict[Hashable, list[dict]] = {name: [] for name in configs}
    if warm is not None:
        for name in warm:
            configs[name]()
        progress(f"warm-up calls done ({len(warm)})")
        warmup = 0
    for round_ in range(warmup + repeats):
        for name, run in configs.items():
            result = run()
            if round_ >= warmup:
                samples[name].append(result)
        progress(f"round {round_ + 1}/{warmup + repeats} done")
    return {name: median_fields(runs) for name, runs in samples.items()}


def median_fields(runs: list[dict]) -> dict:
    """Median of every numeric field across runs; other fields from the last run."""
    out = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    out["repeats"] = len(runs)
    return out
