"""FastVID: dynamic segmentation plus density-based spatiotemporal pruning of video tokens.

Paper: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models"
(2025). Official code: LunarShen/FastVID (``fastvid_qwen25vl``: ``Qwen2_5_VLForConditionalGeneration
.forward`` and the grid_thw branch of ``Qwen2_5_VLVisionFlashAttention2``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F

from ..budget import Budget
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens
from .clustering import density_peaks, top_centres
from .frames import merged_positions, row_saliency, whole_frames

PRESETS: dict[str, dict[str, float]] = {
    # fastvid_qwen25vl/scripts/eval.sh
    "qwen": dict(retention_ratio=0.27, dyseg_c=8, dyseg_tau=0.84, dyseg_ignore=0.95, stprune_d=0.4, dtm_p=4, dtm_beta=0.6),
    # fastvid_llavaonevision / fastvid_llavavideo eval.sh; that path has no frame collapsing (ignore = inf)
    "llava": dict(retention_ratio=0.10, dyseg_c=8, dyseg_tau=0.9, dyseg_ignore=math.inf, stprune_d=0.4, dtm_p=4, dtm_beta=0.6),
}
DTM_NEIGHBOURS = 4  # k of the DPC-KNN density, hard-coded officially
# Regime notes: a budget whose per-frame count int(N*r) floors away more than this share of N*r, and a
# realised context share further than this from d, are noted (FastVID.regime_notes).
R_TOLERANCE = 0.05
D_TOLERANCE = 0.1


@dataclass
class FastVIDResult:
    """Outputs of :func:`fastvid_select`, global indices are ``t * N + i`` (as the reference vectors)."""

    kept_idx: torch.Tensor  # [K] ascending
    kept_features: torch.Tensor  # [K, D] float32: salient copies, merged anchors
    segment_sizes: torch.Tensor  # [S] DySeg segment lengths
    frame_salient_num: torch.Tensor  # [T]
    frame_context_num: torch.Tensor  # [T]
    salient_idx: torch.Tensor  # ascending
    context_anchor_idx: torch.Tensor  # ascending
    token_to_out: torch.Tensor  # [T*N] position in kept_idx each token is carried by (-1: dropped)
    extra_salient: int = 0  # exact-count mode: salient tokens added after the per-frame caps
    segments_without_salient: int = 0  # segments whose plan has no salient token (the official code crashes)


def dyseg(similarity: torch.Tensor, num_frames: int, c: int, tau: float) -> list[int]:
    """Segment lengths: cut after the c-1 least similar transitions and after every one below tau.

    ``c`` must be <= num_frames (the caller clamps). Ties among the least similar transitions go to
    the earlier one.
    """
    weakest = torch.sort(similarity, stable=True).indices[: c - 1]
    cuts = torch.unique(torch.cat([weakest, (similarity < tau).nonzero().flatten()])).tolist()
    bounds = [-1, *cuts, num_frames - 1]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def segment_plan(
    retain: int, similarity: torch.Tensor, n: int, d: float, p: int, ignore: float
) -> tuple[list[int], list[int]]:
    """Salient and context counts for each frame of one segment keeping ``retain`` tokens (official STPrune split).

    ``similarity``: the segment's L-1 consecutive-frame similarities. Only the last frame of each
    run of near-duplicates (similarity >= ``ignore``) gets tokens; context anchors go to every p-th
    such sub-segment counted from the end; each anchor frame holds at most n//2 anchors.
    """
    length = similarity.numel() + 1
    context = max(int(retain * d), 1) if retain > 0 else 0
    salient = retain - context
    if length == 1:
        return [salient], [context]
    cuts = (similarity < ignore).nonzero().flatten().tolist()
    bounds = [-1, *cuts, length - 1]
    sub_sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    v = len(sub_sizes)
    sub_salient = [salient // v + (1 if i < salient % v else 0) for i in range(v)]
    slots = (v + p - 1) // p
    slot_context = [context // slots + (1 if j < context % slots else 0) for j in range(slots)]
    sub_context = [min(slot_context[i // p], n // 2) if i % p == 0 else 0 for i in range(v)]
    sub_context.reverse()
    frame_salient: list[int] = []
    frame_context: list[int] = []
    for size, sal, ctx in zip(sub_sizes, sub_salient, sub_context):
        frame_salient += [0] * (size - 1)
        frame_context += [0] * (size - 1)
        frame_context.append(ctx)
        frame_salient.append(min(sal, n - ctx) if ctx > 0 else min(sal, n))
    return frame_salient, frame_context


def fastvid_select(
    features: torch.Tensor,
    saliency: torch.Tensor,
    *,
    retention_ratio: float,
    dyseg_c: int,
    dyseg_tau: float,
    dyseg_ignore: float,
    stprune_d: float,
    dtm_p: int,
    dtm_beta: float,
    count: int | None = None,
) -> FastVIDResult:
    """FastVID (Qwen2.5-VL path) on ``features`` [T, N, D] with ATS ``saliency`` [T, N]; float32.

    Without ``count`` this is the official computation (every segment keeps int(N*r) tokens per
    frame). With ``count`` the segments share exactly ``count`` tokens in proportion to their
    length, and tokens the per-frame caps would lose are refilled with the most salient unkept
    tokens (frames that already hold tokens first), so exactly ``count`` tokens are kept.
    ``dyseg_c`` must be <= T (callers clamp).
    """
    t, n, dim = features.shape
    x = features.float()
    g = F.normalize(x.mean(dim=1), dim=-1)
    similarity = (g[:-1] * g[1:]).sum(dim=-1)
    sizes = dyseg(similarity, t, dyseg_c, dyseg_tau)
    if count is None:
        frame_retain = max(int(n * retention_ratio), 1)
        retains = [frame_retain * size for size in sizes]
    else:
        cum = [count * end // t for end in accumulate(sizes)]
        retains = [b - a for a, b in zip([0, *cum[:-1]], cum)]
    frame_salient: list[int] = []
    frame_context: list[int] = []
    without_salient = 0
    start = 0
    for size, retain in zip(sizes, retains):
        sal, ctx = segment_plan(retain, similarity[start : start + size - 1], n, stprune_d, dtm_p, dyseg_ignore)
        frame_salient += sal
        frame_context += ctx
        without_salient += sum(sal) == 0
        start += size

    device = x.device
    salient = torch.zeros(t, n, dtype=torch.bool, device=device)
    anchor_mask = torch.zeros_like(salient)
    anchors: dict[int, torch.Tensor] = {}
    for f in range(t):
        if frame_salient[f] > 0:
            salient[f, top_k_stable(saliency[f], frame_salient[f])] = True
        if frame_context[f] > 0:
            rest = (~salient[f]).nonzero().flatten()
            peaks = density_peaks(x[f, rest], DTM_NEIGHBOURS)
            anchors[f] = rest[top_centres(peaks.score, frame_context[f])]
            anchor_mask[f, anchors[f]] = True

    extra = 0
    if count is not None:
        extra = count - int(salient.sum()) - int(anchor_mask.sum())
        if extra > 0:
            flat_sal = saliency.float().flatten()
            holds = (salient | anchor_mask).any(dim=1, keepdim=True).expand(t, n).flatten()
            free = (~(salient | anchor_mask)).flatten().nonzero().flatten()
            order = torch.sort(flat_sal[free], descending=True, stable=True).indices
            order = order[torch.sort(holds[free][order].int(), descending=True, stable=True).indices]
            salient.view(-1)[free[order[:extra]]] = True

    flat = x.reshape(t * n, dim)
    unit = F.normalize(flat, dim=-1)
    merged = flat.clone()
    # DTM averages a token into one anchor of every anchored frame of its segment; the picture needs
    # one representative, so record the most similar of those anchors.
    best_similarity = torch.full((t * n,), -math.inf, device=device)
    best_anchor = torch.full((t * n,), -1, dtype=torch.long, device=device)
    start = 0
    for size in sizes:
        seg = slice(start * n, (start + size) * n)
        for f in range(start, start + size):
            if f not in anchors:
                continue
            targets = f * n + anchors[f]
            candidate = ~salient[start : start + size].flatten()
            candidate[targets - start * n] = False
            rows = torch.arange(seg.start, seg.stop, device=device)[candidate]
            similarity_to_anchor = unit[rows] @ unit[targets].T
            assign = similarity_to_anchor.argmax(dim=1)
            best = similarity_to_anchor.gather(1, assign[:, None]).squeeze(1)
            better = best > best_similarity[rows]
            best_similarity[rows[better]] = best[better]
            best_anchor[rows[better]] = targets[assign[better]]
            counts = torch.bincount(assign, minlength=targets.numel()).to(flat.dtype)[:, None]
            sums = torch.zeros(targets.numel(), dim, dtype=flat.dtype, device=device).index_add_(0, assign, flat[rows])
            weight = (1.0 / (counts + 1.0)).clamp(min=dtm_beta)
            merged[targets] = weight * flat[targets] + (1.0 - weight) * sums / counts.clamp(min=1.0)
        start += size

    salient_idx = salient.flatten().nonzero().flatten()
    context_idx = anchor_mask.flatten().nonzero().flatten()
    kept = (salient | anchor_mask).flatten().nonzero().flatten()
    position = torch.full((t * n,), -1, dtype=torch.long, device=device)
    position[kept] = torch.arange(kept.numel(), device=device)
    token_to_out = torch.where(best_anchor >= 0, position[best_anchor.clamp(min=0)], -1)
    token_to_out[kept] = position[kept]
    return FastVIDResult(
        kept_idx=kept,
        kept_features=merged[kept],
        token_to_out=token_to_out,
        segment_sizes=torch.tensor(sizes, dtype=torch.long),
        frame_salient_num=salient.sum(dim=1),
        frame_context_num=anchor_mask.sum(dim=1),
        salient_idx=salient_idx,
        context_anchor_idx=context_idx,
        extra_salient=extra,
        segments_without_salient=without_salient,
    )


@register("fastvid")
@dataclass
class FastVID(Method):
    """FastVID: DySeg temporal segments, then STPrune (ATS salient tokens + DTM merged anchors) per segment.

    Paper: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models" (2025).

    * DySeg: frame features = normalized mean token; cut after the c-1 least similar transitions and
      after every transition with cosine < tau.
    * STPrune per segment of L frames keeps R = int(N*r)*L tokens: C = max(int(R*d), 1) context
      anchors, the rest salient. Within a segment, runs of frames with cosine >= ``dyseg_ignore``
      collapse onto their last frame (the others get nothing); salient tokens are split evenly over
      those representative frames and anchors go to every p-th of them, counted from the end (at
      most N//2 per frame).
    * ATS: per frame, the top tokens by pseudo-[CLS] attention of the last ViT block
      (:func:`ats_saliency`, read from ``tokens.vision_saliency``).
    * DTM: density-peak (DPC-KNN, k=4) anchors among an anchor frame's non-salient tokens; every
      other non-salient token of the segment joins its most cosine-similar anchor, which becomes
      ``w*anchor + (1-w)*mean(members)``, w = max(1/(members+1), beta).

    Presets (``preset``): "qwen" (fastvid_qwen25vl eval.sh: r=0.27, c=8, tau=0.84, ignore=0.95,
    d=0.4, p=4, beta=0.6) and "llava" (LLaVA-OneVision / LLaVA-Video eval.sh: r=0.10, c=8,
    tau=0.9, d=0.4, p=4, beta=0.6; that path has no frame collapsing, i.e. ignore=inf). Any knob
    passed explicitly overrides the preset.

    Budget: ``retention_ratio`` is r. A vtc budget (``retain``/``tokens``) replaces it and is met
    exactly: the segments share ``budget.count(N_total)`` tokens in proportion to their lengths
    (the official int(N*r)*L floors per frame and keeps fewer), and any tokens lost to the per-frame
    caps are refilled with the most salient unkept tokens, frames already holding tokens first.
    Per-frame budgets are refused: FastVID moves tokens between frames by design. Passing both r
    and a budget is refused.

    Positions: salient tokens are copies; a merged anchor is the anchor's own row and keeps that
    row's (t, h, w) position ids, as the official code gathers the M-RoPE ids of the kept rows.

    Regime: the paper's r keeps int(N*r) tokens in every frame, a share d of them context anchors.
    The stats say where a run leaves that: a segment whose share is all anchors (no salient token;
    the official code crashes there: at 16 tokens per frame and r=0.1 every segment), a budget whose
    per-frame count int(N*r) floors away more than 5% of N*r (a budget is then shared over segments,
    not given per frame as r would), and anchors more than 10 points away from d of what is kept
    (short segments: at least one anchor each; at 16 tokens per group they take 62%).

    Deviations from the official code:

    * ATS input: on Qwen models the engine hooks the vision tower's last block and hands each
      token the pseudo-[CLS] saliency of :func:`vtc.saliency.ats_saliency` (``tokens.vision_saliency``),
      as the official code computes it. Families whose vision tower vtc cannot read (or tokens
      given without it) fall back to the card's mean LLM-input token as pseudo-[CLS] query
      (softmax over each frame of mean_token . x / sqrt(D)); the fallback is recorded in the notes.
    * Short videos: DySeg needs T >= c (torch.topk raises otherwise); c is clamped to T, which makes
      every frame its own segment, as official with T == c; the clamp is noted.
    * int(N*r) == 0 makes the official code crash (negative salient count); it is raised to 1.
    * Ties (saliency top-k, density scores, DySeg's weakest transitions) go to the lower index; the
      official density adds U(0, 1e-6) noise instead, and the reference vectors do not depend on it.
    * The LLaVA preset runs the Qwen-path STPrune above, not the LLaVA code's batched variant (which
      gives every frame int(fr*d) fewer salient tokens, floors anchor shares without remainders and
      lets anchors absorb themselves): budgets match up to rounding.

    Complexity: DySeg O(T*N*D); ATS O(T*N log N); DTM O(N^2*D) per anchor frame; merging O(L*N*A*D)
    per anchor frame of a segment with A anchors. The merging makes FastVID quadratic in frames on long
    smooth video, as the official algorithm is: every non-salient token of a segment is compared with
    the anchors of every anchor frame of that segment, i.e. O(L*N) tokens x O(L*r*d*N) anchors, and
    DySeg makes only c-1 = 7 cuts plus one per transition below tau, so without scene changes a
    segment holds L ~ T/c frames and the work grows as T^2 (eval/results/efficiency_scaling_cpu.md:
    exponent 1.69 fitted over 8-128 frames, 1.99 between 32 and 128). Video with frequent scene cuts
    keeps L short and the cost close to linear.
    """

    preset: str = "qwen"
    retention_ratio: float | None = None
    dyseg_c: int | None = None
    dyseg_tau: float | None = None
    dyseg_ignore: float | None = None
    stprune_d: float | None = None
    dtm_p: int | None = None
    dtm_beta: float | None = None
    stage = "prefill"
    needs = frozenset({"vision_saliency"})
    budget_knob = ("retention_ratio", "retention_ratio= (the paper's r)")
    exact_budget = True  # a vtc budget is met exactly (see the docstring)
    whole_video_only = "moves tokens between frames (whole frames can get none)"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for knob, value in PRESETS[self.preset].items():
            if knob != "retention_ratio" and getattr(self, knob) is None:
                setattr(self, knob, value)
        if self.retention_ratio is not None and not 0.0 < self.retention_ratio <= 1.0:
            raise ValueError(f"retention_ratio must be in (0, 1], got {self.retention_ratio}")
        for knob in ("dyseg_c", "dtm_p"):
            value = getattr(self, knob)
            if value < 1:
                raise ValueError(f"{knob} must be an int >= 1, got {value!r}")
        if not 0.0 <= self.stprune_d <= 1.0:
            raise ValueError(f"stprune_d (context share) must be in [0, 1], got {self.stprune_d}")
        if not 0.0 <= self.dtm_beta <= 1.0:
            raise ValueError(f"dtm_beta (anchor weight floor) must be in [0, 1], got {self.dtm_beta}")
        for knob in ("dyseg_tau", "dyseg_ignore"):
            if math.isnan(float(getattr(self, knob))):
                raise ValueError(f"{knob} must be a number, got NaN")


    def regime_notes(self, result: FastVIDResult, total: int, per_frame: int, budget: Budget) -> list[str]:
        """Where the run leaves the regime FastVID's paper describes (see the class docstring's Regime)."""
        notes = []
        segments = result.segment_sizes.numel()
        if result.segments_without_salient:
            notes.append(f"{result.segments_without_salient} of {segments} DySeg segment(s) keep no salient token "
                         "(their share is all context anchors; the official code crashes there)")
        if budget.is_set:
            kept = result.kept_idx.numel()
            r = budget.retain if budget.retain is not None else kept / total
            if int(per_frame * r) < (1 - R_TOLERANCE) * per_frame * r:
                notes.append(f"retain {r:.3g} is {per_frame * r:.1f} tokens per frame; FastVID's r keeps "
                             f"int({per_frame}*r) = {int(per_frame * r)} per frame, so the budget is shared "
                             "over segments instead")
            anchors = int(result.frame_context_num.sum())
            if kept and abs(anchors / kept - self.stprune_d) > D_TOLERANCE:
                notes.append(f"context anchors are {anchors / kept:.0%} of the {kept} kept tokens, not d={self.stprune_d:g} "
                             f"({segments} segments, at least one anchor each, at most {per_frame // 2} per anchor frame)")
        return notes

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        budget = self.resolve_budget(budget)
        rows = whole_frames(tokens, self.name)
        x = tokens.features[rows].float()
        saliency, notes = row_saliency(tokens, rows, x)
        frames = rows.shape[0]
        c = min(self.dyseg_c, frames)
        if c < self.dyseg_c:
            notes.append(f"DySeg c={self.dyseg_c} clamped to the {frames} frames present (one segment per frame)")
        ratio = PRESETS[self.preset]["retention_ratio"] if self.retention_ratio is None else self.retention_ratio
        result = fastvid_select(
            x, saliency, retention_ratio=ratio, dyseg_c=c, dyseg_tau=self.dyseg_tau,
            dyseg_ignore=self.dyseg_ignore, stprune_d=self.stprune_d, dtm_p=self.dtm_p, dtm_beta=self.dtm_beta,
            count=budget.count(len(tokens)) if budget.is_set else None,
        )
        if result.extra_salient:
            notes.append(f"exact budget: {result.extra_salient} salient tokens refilled after the per-frame caps")
        notes += self.regime_notes(result, len(tokens), rows.shape[1], budget)
        keep = rows.flatten()[result.kept_idx]
        order = torch.argsort(keep)
        return Selection(keep=keep[order], features=result.kept_features[order].to(tokens.features.dtype), notes=notes,
                         merged_into=merged_positions(rows.flatten(), result.token_to_out, order, len(tokens)))
