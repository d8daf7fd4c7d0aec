"""``TrainConfig``: the hyper-parameters of a ``vtc train`` run, checked when built (no torch needed),
so the CLI refuses a bad value before it loads a model."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..budget import Budget
from ..catalogue import load as load_catalogue
from ..checks import at_least, non_negative, positive

SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    method: str = "scorer"
    retain: float = 0.1
    steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    lora_lr: float = 1e-3
    lora_rank: int = 8
    lora_alpha: int = 16
    evidence_weight: float = 1.0
    seed: int = 0
    save_every: int = 50
    num_frames: int = 16
    mixed_precision: str = "no"
    schedule: str = "cosine"
    annotate: bool = True  # scorer only: kept tokens carry a learned note of how their cell changes (LearnedScorer)

    def __post_init__(self) -> None:
        kinds = load_catalogue()["trained"]
        if self.method not in kinds:
            raise ValueError(f"unknown trained compressor {self.method!r}; choose one of {', '.join(kinds)}")
        Budget(retain=self.retain)
        for name in ("steps", "batch_size", "lora_rank", "save_every", "num_frames"):
            at_least(name, getattr(self, name), 1)
        at_least("seed", self.seed, 0)
        positive("lora_alpha", self.lora_alpha)
        for name in ("lr", "lora_lr", "evidence_weight"):
            non_negative(name, getattr(self, name))
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"unknown mixed precision {self.mixed_precision!r}; choose from {MIXED_PRECISION}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")

    def lr_scale(self, step: int) -> float:
        """Factor on both learning rates at ``step``: 1 throughout ("constant"), or a half cosine from
        1 down to 0.1 at the last step ("cosine", the usual way to end a fine-tune; the committed adapters
        use it, but its effect alone was not measured). A function of the step, so resuming needs no
        scheduler state."""
        if self.schedule == "constant" or self.steps <= 1:
            return 1.0
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(step, self.steps - 1) / (self.steps - 1)))
