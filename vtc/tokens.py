"""The values that flow between the engine and the methods: what a method sees and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


def grid_coords(frames: int, height: int, width: int, device: torch.device, first_frame: int = 0) -> torch.Tensor:
    """[frames * height * width, 3] (t, h, w) of whole grids laid out t-major, then h, then w (the order every
    supported family uses), t counted from ``first_frame``."""
    tt, hh, ww = torch.meshgrid(
        torch.arange(first_frame, first_frame + frames, device=device), torch.arange(height, device=device),
        torch.arange(width, device=device), indexing="ij",
    )
    return torch.stack([tt.flatten(), hh.flatten(), ww.flatten()], dim=1)


@dataclass
class VisualTokens:
    """One sample's visual tokens at the point a method acts.

    Methods only ever see this, never a model class: everything family-specific is resolved
    by the adapter in ``vtc.patches`` before a method runs.

    features: [N, D] hidden states of the visual rows (LLM input for prefill, layer input for layer).
    coords:   [N, 3] (t, h, w) on the family's token grid (t counts temporal tokens).
    frame:    [N] index of the temporal token group (0-based, per sample).
    time:     [N] seconds in the source video.
    index:    [N] row of each token in the prompt sequence the method was called on.
    grid:     (T, H, W) of the full token grid before any compression.
    attn:     [N] optional saliency: last text token's head-averaged attention (layer stage).
    query:    [D] optional text embedding of the question.
    pixels:   [N, tp, C, P] optional raw (de-normalised) pixels of each token's patch, per temporal sub-frame.
    source:   [N] index of each token among the sample's original visual tokens.
    vision_saliency: [N] optional ViT attention saliency of each token (methods with needs={"vision_saliency"}).
    vision_keys: [N, dk] optional ViT keys (head-averaged) of each token at a vision-stage method's layer.
    vision_cls: whether the vision tower has a [CLS] token that stays outside these rows (vision stage).
    question: [L, D] optional input embeddings of the text after the video (methods with needs={"query"});
              one per sample, not per token, so ``subset`` leaves it as it is.
    carry:    what a method that acts at several layers hands from one of its parts to the next for this
              sample (``Selection.carry``; immutable, since generate()'s copies of a sample share it).

    Every per-token field is narrowed by ``subset``, so a method never has to guess how one is indexed.
    """

    features: torch.Tensor
    coords: torch.Tensor
    frame: torch.Tensor
    time: torch.Tensor
    index: torch.Tensor
    grid: tuple[int, int, int]
    source: torch.Tensor
    attn: torch.Tensor | None = None
    query: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    vision_saliency: torch.Tensor | None = None
    vision_keys: torch.Tensor | None = None
    vision_cls: bool = False
    question: torch.Tensor | None = None
    carry: object = None

    @classmethod
    def from_grid(cls, features: torch.Tensor, grid: tuple[int, int, int], seconds_per_frame: float = 1.0) -> "VisualTokens":
        """Tokens of one video laid out t-major, then h, then w (the order every supported family uses)."""
        t, h, w = grid
        if features.shape[0] != t * h * w:
            raise ValueError(f"{features.shape[0]} features do not fill a {t}x{h}x{w} grid")
        device = features.device
        coords = grid_coords(t, h, w, device)
        rows = torch.arange(features.shape[0], device=device)
        return cls(features=features, coords=coords, frame=coords[:, 0].clone(),
                   time=coords[:, 0].float() * seconds_per_frame, index=rows, grid=(t, h, w), source=rows.clone())

    def to(self, device: torch.device) -> "VisualTokens":
        """The same tokens on ``device`` (layers of a device_map-split model live on different GPUs)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame.unique().numel()) if len(self) else 0

    def frames(self) -> list[torch.Tensor]:
        """Row indices of each frame present, in increasing frame order."""
        order = torch.argsort(self.frame, stable=True)
        counts = torch.unique_consecutive(self.frame[order], return_counts=True)[1]
        return list(torch.split(order, counts.tolist()))

    def subset(self, keep: torch.Tensor, features: torch.Tensor | None = None, carry: object = None) -> "VisualTokens":
        """The tokens at rows ``keep`` (sorted), optionally with replaced (merged) features and a new ``carry``."""
        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[keep]

        return replace(
            self,
            features=self.features[keep] if features is None else features,
            coords=self.coords[keep],
            frame=self.frame[keep],
            time=self.time[keep],
            index=self.index[keep],
            source=self.source[keep],
            attn=take(self.attn),
            pixels=take(self.pixels),
            vision_saliency=take(self.vision_saliency),
            vision_keys=take(self.vision_keys),
            carry=self.carry if carry is None else carry,
        )


@dataclass
class Selection:
    """What a method decided: the rows to keep and, for merging methods, their new features.

    keep:     [K] sorted row indices into the method's ``VisualTokens``.
    features: [K, D] optional replacement features for the kept rows (merging). Merged tokens
              always take the position ids of the kept row they replace.
    notes:    what the stats should say about this decision (a fallback taken, a budget missed).
    merged_into: [N] optional, for merging methods: per input row, the position in ``keep`` of the
              kept token its features went into (a kept row points at itself; -1: dropped outright).
              Recorded as ``CompressionStats.merged_into`` so pictures can show which tokens a
              merged token stands for.
    carry:    optional state for the method's next part at a later layer (``VisualTokens.carry``).
    """

    keep: torch.Tensor
    features: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    merged_into: torch.Tensor | None = None
    carry: object = None

    def __post_init__(self) -> None:
        if self.keep.ndim != 1:
            raise ValueError(f"Selection.keep must be 1-D, got shape {tuple(self.keep.shape)}")
        if self.keep.numel() > 1 and not bool((self.keep[1:] > self.keep[:-1]).all()):
            raise ValueError("Selection.keep must be strictly increasing (sorted, no duplicates)")
        if self.features is not None and self.features.shape[0] != self.keep.numel():
            raise ValueError(
                f"Selection.features has {self.features.shape[0]} rows for {self.keep.numel()} kept tokens"
            )
        if self.merged_into is not None and self.merged_into.ndim != 1:
            raise ValueError(f"Selection.merged_into must be 1-D, got shape {tuple(self.merged_into.shape)}")

    def positions(self, num_rows: int) -> torch.Tensor:
        """[num_rows] the position in ``keep`` each input row ends up in (merged or kept), -1 if dropped."""
        if self.merged_into is not None:
            return self.merged_into
        out = torch.full((num_rows,), -1, dtype=torch.long, device=self.keep.device)
        out[self.keep] = torch.arange(self.keep.numel(), device=self.keep.device)
        return out


@dataclass
class CacheChoice:
    """What a cache-stage method decided at one decode step for one row.

    keep:        sorted rows of the row's visual tokens that layers from the method's layer attend to.
    attention:   this step's attention over all of the row's visual tokens (the next step compares with it).
    reselected:  whether ``keep`` was chosen anew at this step (else carried over from the previous one).
    """

    keep: torch.Tensor
    attention: torch.Tensor
    reselected: bool
