"""What every trained compressor shares: it is an ``nn.Module`` (weights) and a vtc ``Method`` (a stage).

In ``eval()`` mode a compressor makes hard, exact-budget decisions; in ``train()`` mode the same
decisions carry gradients back into its weights (straight-through), so the LLM loss trains it.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..budget import Budget
from ..method import Method, top_k_stable
from ..tokens import VisualTokens

WHOLE_VIDEO = "is trained and run with one budget over the whole video"


class TrainedCompressor(nn.Module, Method):
    """Base of the learned compressors (prefill stage).

    ``config()`` returns the constructor arguments, saved as JSON beside the weights so that
    ``from_config`` rebuilds the same module before the safetensors are loaded. ``retain`` is the
    budget the compressor was trained for; it applies when neither ``vtc.wrap`` nor a spec sets one.
    """

    kind: ClassVar[str] = ""
    stage = "prefill"
    whole_video_only = WHOLE_VIDEO

    def __init__(self, hidden_size: int, retain: float) -> None:
        nn.Module.__init__(self)
        if not 0.0 < retain <= 1.0:
            raise ValueError(f"retain must be in (0, 1], got {retain}")
        self.hidden_size = int(hidden_size)
        self.retain = float(retain)
        self.name = f"trained-{self.kind}"
        # Set by the trainer before each step so that exploration noise is reproducible (resumable runs).
        self.noise_generator: torch.Generator | None = None
        # Per-sample raw scores of the latest forward while training (for auxiliary losses).
        self.last_scores: list[tuple[torch.Tensor, torch.Tensor]] = []

    def config(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size, "retain": self.retain}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TrainedCompressor":
        return cls(**config)

    def resolve_budget(self, budget: Budget) -> Budget:
        if budget.scope == "frame":
            raise ValueError(f"{self.name} {WHOLE_VIDEO}: use a video-level budget")
        return budget if budget.is_set else Budget(retain=self.retain)

    def describe(self) -> str:
        return f"{self.name}(retain={self.retain:g}, {sum(p.numel() for p in self.parameters())} weights)"

    def check_features(self, tokens: VisualTokens) -> torch.Tensor:
        """The features as float in the compressor's dtype/device; refuses a model of another width."""
        if tokens.features.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{self.name} was trained for hidden size {self.hidden_size}, but this model's visual tokens have "
                f"{tokens.features.shape[-1]}: it belongs to another base model"
            )
        weight = next(self.parameters())
        return tokens.features.to(weight.device, weight.dtype)


def straight_through_top_k(
    scores: torch.Tensor, count: int, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept rows (sorted) and a gate [K] that is exactly 1.0 but carries d(gate)/d(score).

    Training selection (Gumbel top-k with a straight-through sigmoid): Gumbel noise perturbs the
    scores so the scorer explores; the k largest perturbed scores are kept (the hard, exact budget);
    the gate's gradient is that of sigmoid((perturbed - threshold) / temperature), with the threshold
    halfway between the k-th and (k+1)-th perturbed score, so tokens near the cut learn most.
    """
    uniform = torch.rand(scores.shape, generator=generator, dtype=torch.float32).to(scores.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
    perturbed = scores + gumbel.to(scores.dtype)
    order = torch.sort(perturbed.detach().float(), descending=True, stable=True).indices
    keep = torch.sort(order[:count]).values
    if count < scores.numel():
        threshold = 0.5 * (perturbed[order[count - 1]] + perturbed[order[count]]).detach()
    else:
        threshold = perturbed.detach().min() - 1.0
    soft = torch.sigmoid((perturbed[keep] - threshold) / temperature)
    return keep, soft - soft.detach() + 1.0


def hard_top_k(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Inference selection: the ``count`` best rows, sorted; ties prefer the lower row (deterministic)."""
    return torch.sort(top_k_stable(scores, count)).values


def init_linear(layer: nn.Linear, zero: bool = False) -> nn.Linear:
    """Seeded-friendly init; ``zero`` starts a residual branch at exactly nothing."""
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer
