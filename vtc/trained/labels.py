"""Training targets aligned to the compressed sequence.

A wrapped model's forward returns logits for the *compressed* sequence (dropped visual rows are
gone, the batch is re-left-padded), so full-length labels no longer line up: the engine's own
compaction of the prefill is applied to them.
"""
from __future__ import annotations

import torch

from ..sequence import Compaction

IGNORE = -100


def compact_labels(labels: torch.Tensor, compaction: Compaction | None) -> torch.Tensor:
    """``labels`` [B, L] as they line up with the compressed logits [B, L']; new padding is ``IGNORE``.

    ``compaction`` is the engine's record of the prefill (``Engine.prefill_compaction``); None means
    nothing was compressed.
    """
    if compaction is None or compaction.identity:
        return labels
    return compaction.rows(labels.to(compaction.gather.device)).masked_fill(~compaction.valid, IGNORE)


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
