"""Training targets aligned to the compressed sequence.

A wrapped model's forward returns logits for the *compressed* sequence (dropped visual rows are
gone, the batch is re-left-padded), so full-length labels no longer line up. The engine's
compaction is a pure function of which rows were kept, and ``vtc_stats.kept_indices`` says which
visual rows survived, so the same compaction is rebuilt here and applied to the labels.
"""
from __future__ import annotations

import torch

from ..sequence import Compaction

IGNORE = -100


def kept_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, video_token_id: int,
              kept_indices: list[list[int]]) -> torch.Tensor:
    """[B, L] True for every prompt row that entered the LLM: all text rows and the kept visual rows."""
    visual = input_ids == video_token_id
    if attention_mask is not None:
        visual &= attention_mask.bool()
    kept = ~visual
    for b, indices in enumerate(kept_indices):
        rows = visual[b].nonzero().flatten()
        kept[b, rows[torch.as_tensor(indices, dtype=torch.long, device=rows.device)]] = True
    return kept


def compact_labels(labels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   video_token_id: int, kept_indices: list[list[int]]) -> torch.Tensor:
    """``labels`` [B, L] as they line up with the compressed logits [B, L']; new padding is ``IGNORE``."""
    kept = kept_rows(input_ids, attention_mask, video_token_id, kept_indices)
    if bool(kept.all()):
        return labels
    compaction = Compaction.from_kept(kept)
    return compaction.rows(labels).masked_fill(~compaction.valid, IGNORE)


def reply_labels(input_ids: torch.Tensor, reply_lengths: list[int]) -> torch.Tensor:
    """Labels that supervise only the last ``reply_lengths[b]`` tokens of each left-padded row."""
    labels = torch.full_like(input_ids, IGNORE)
    for b, length in enumerate(reply_lengths):
        labels[b, input_ids.shape[1] - length :] = input_ids[b, input_ids.shape[1] - length :]
    return labels


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each supervised token given the rows before it."""
    shifted = labels[:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=IGNORE
    )
