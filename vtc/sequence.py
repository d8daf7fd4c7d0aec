"""Dropping rows from a batch of left-padded sequences and keeping every companion tensor aligned."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Compaction:
    """Which old rows make up each new (left-padded) row.

    gather: [B, L'] old row index for every new row (padding rows point at a kept row).
    valid:  [B, L'] False for the padding added on the left to align shorter samples.
    kept:   [B, L] True for old rows that survive.
    """

    gather: torch.Tensor
    valid: torch.Tensor
    kept: torch.Tensor

    @classmethod
    def from_kept(cls, kept: torch.Tensor) -> "Compaction":
        batch, _ = kept.shape
        lengths = kept.sum(dim=1)
        new_len = int(lengths.max()) if batch else 0
        gather = torch.zeros(batch, new_len, dtype=torch.long, device=kept.device)
        valid = torch.zeros(batch, new_len, dtype=torch.bool, device=kept.device)
        for b in range(batch):
            rows = kept[b].nonzero().flatten()
            pad = new_len - rows.numel()
            gather[b, pad:] = rows
            gather[b, :pad] = rows[0] if rows.numel() else 0
            valid[b, pad:] = True
        return cls(gather, valid, kept)

    @property
    def identity(self) -> bool:
        return bool(self.kept.all())

    def rows(self, x: torch.Tensor, seq_dim: int = 1) -> torch.Tensor:
        """Gather along ``seq_dim`` of a tensor whose batch dim precedes it ([B, L, ...] or [P, B, L])."""
        batch_dim = seq_dim - 1
        index = self.gather.to(x.device)  # with device_map, layers may sit on other devices
        shape = [1] * x.ndim
        shape[batch_dim], shape[seq_dim] = index.shape
        index = index.view(shape).expand(*[x.shape[d] if d not in (batch_dim, seq_dim) else shape[d] for d in range(x.ndim)])
        return torch.gather(x, seq_dim, index)

    def mask_2d(self, mask: torch.Tensor | None) -> torch.Tensor:
        """The new [B, L'] padding mask (1 = attend), in the dtype of the old one."""
        if mask is None:
            return self.valid.long()
        return torch.gather(mask, 1, self.gather.to(mask.device)) * self.valid.to(mask.device, mask.dtype)

    def mask_4d(self, mask: torch.Tensor, rows_too: bool) -> torch.Tensor:
        """Gather key columns (and query rows in prefill) of a [B, 1, Q, K] mask, bool or additive float.

        New padding columns are masked; new padding query rows attend to themselves only, so their
        (unused) outputs stay finite instead of NaN.
        """
        if self.gather.device != mask.device:
            return Compaction(*(t.to(mask.device) for t in (self.gather, self.valid, self.kept))).mask_4d(mask, rows_too)
        gathered = mask
        if rows_too:
            idx = self.gather[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3])
            gathered = torch.gather(gathered, 2, idx)
        extra = mask.shape[3] - self.kept.shape[1]  # decoded tokens appended after the prefill
        cols = self.columns(extra)
        idx = cols[:, None, None, :].expand(-1, gathered.shape[1], gathered.shape[2], -1)
        gathered = torch.gather(gathered, 3, idx)
        valid_cols = self.valid_columns(extra)[:, None, None, :]
        blocked = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
        allowed = True if mask.dtype == torch.bool else 0.0
        gathered = gathered.masked_fill(~valid_cols, blocked)
        if rows_too:
            pad_rows = ~self.valid
            if pad_rows.any():
                eye = torch.eye(gathered.shape[2], dtype=torch.bool, device=mask.device)[None, None]
                fix = pad_rows[:, None, :, None] & eye
                gathered = gathered.masked_fill(fix, allowed)
        return gathered

    def columns(self, extra: int) -> torch.Tensor:
        """Old column for each new column, with ``extra`` decoded columns appended unchanged."""
        if extra <= 0:
            return self.gather
        old_len = self.kept.shape[1]
        tail = torch.arange(old_len, old_len + extra, device=self.gather.device).expand(self.gather.shape[0], -1)
        return torch.cat([self.gather, tail], dim=1)

    def valid_columns(self, extra: int) -> torch.Tensor:
        if extra <= 0:
            return self.valid
        ones = torch.ones(self.valid.shape[0], extra, dtype=torch.bool, device=self.valid.device)
        return torch.cat([self.valid, ones], dim=1)

    def then(self, later: "Compaction") -> "Compaction":
        """The single compaction equal to applying ``self`` and then ``later``."""
        gather = torch.gather(self.gather, 1, later.gather)
        valid = torch.gather(self.valid, 1, later.gather) & later.valid
        kept = torch.zeros_like(self.kept)
        batch_index = torch.arange(gather.shape[0], device=gather.device)[:, None].expand_as(gather)
        kept[batch_index[valid], gather[valid]] = True
        return Compaction(gather, valid, kept)


def text_positions(mask_2d: torch.Tensor) -> torch.Tensor:
    """Sequence positions as generate() derives them from a padding mask (pads get 1)."""
    positions = mask_2d.long().cumsum(-1) - 1
    return positions.masked_fill(mask_2d == 0, 1)


def new_rows(compaction: Compaction, old_rows: torch.Tensor, sample: int) -> torch.Tensor:
    """Where old rows of one sample sit after the compaction (they must have been kept)."""
    inverse = torch.full((compaction.kept.shape[1],), -1, dtype=torch.long, device=old_rows.device)
    valid = compaction.valid[sample]
    inverse[compaction.gather[sample][valid]] = valid.nonzero().flatten()
    rows = inverse[old_rows]
    if bool((rows < 0).any()):
        raise RuntimeError("internal error: a kept visual row was dropped by the compaction")
    return rows


def text_after_video(embeds: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Input embeddings [L, D] of one sample's rows after its last visual row, padding left out (the question
    and the prompt's tail); empty when the video ends the prompt. Callers decide what that means: methods
    that need the question refuse, a selector plans without one."""
    rows = torch.arange(visual.shape[0], device=visual.device)
    after = rows > int(rows[visual].max()) if bool(visual.any()) else torch.ones_like(visual)
    if mask is not None:
        after &= mask.bool()
    return embeds[after]
