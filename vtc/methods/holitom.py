"""HoliTom, outer-LLM stage: global temporal windows, static merging, dynamic saliency selection.

Paper: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models"
(NeurIPS 2025). Official code: cokeshao/HoliTom, ``holitom/llava_arch.py``
(``select_static_windows``, ``get_static_dynamic_features``, ``holitom``,
``merge_tokens_by_attention_density``, ``merge_tokens_by_density``, ``merge_tokens_by_clustering``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..budget import Budget, apportion
from ..method import Method, top_k_stable
from ..registry import register
from ..tokens import Selection, VisualTokens
from .clustering import assign_to_nearest, density_peaks, top_centres
from .frames import merged_positions, row_saliency, whole_frames
from .holitom_inner import DEFAULT_INNER_RATIO, HoliTomInner

DEFAULT_RETAIN = 0.1  # RETAIN_RATIO env default
DEFAULT_TAU = 0.8  # T env default, used by the 0.15-0.25 scripts
LOW_RETAIN_TAU = 0.65  # eval_ov-7b_holitom.sh pairs RETAIN_RATIO=0.10 with T=0.65


@dataclass
class HoliTomResult:
    """Outputs of :func:`holitom_select` in the official (one_token) order.

    Per window: the static merged tokens (centres in ascending position), then each frame's
    dynamic tokens (dominant tokens in ascending position, then merged contextual centres).
    """

    out_features: torch.Tensor  # [M, C] float32
    out_pos: torch.Tensor  # [M] spatial index 0..N-1 (the centre's for merged tokens)
    out_frame: torch.Tensor  # [M] frame of a dynamic token; the window's first frame for static tokens
    out_is_static: torch.Tensor  # [M] bool
    windows: torch.Tensor  # [W, 2] inclusive (start, end)
    token_to_out: torch.Tensor  # [T*N] output row each input token is merged into or kept as (-1: dropped)
    total_reduced: int  # tokens saved by keeping static positions once per window
    retain_after_static: float  # r' (the official ratio; the budget share when ``count`` is given)
    max_window_size: int  # the window cap used (lowered below the one asked when static merging would undercut ``count``)
    left_at_max_window: int  # tokens static merging leaves with the window cap asked


def static_window_counts(above: torch.Tensor, max_window_size: int) -> list[list[int]]:
    """``count[s][e]`` = (e - s) * #positions similar (> tau) across every transition of [s, e].

    ``above``: [T-1, N] bool, transition t -> t+1 above tau. Only windows of at most
    ``max_window_size`` frames are filled (others stay 0 and are never read).
    """
    t = above.shape[0] + 1
    count = [[0] * t for _ in range(t)]
    for s in range(t - 1):
        run = torch.cumprod(above[s : s + max_window_size - 1].int(), dim=0).sum(dim=1).tolist()
        for j, n in enumerate(run):
            count[s][s + 1 + j] = (j + 1) * n
    return count


def select_static_windows(above: torch.Tensor, max_window_size: int) -> tuple[list[tuple[int, int]], int]:
    """Partition the frames into windows maximising the tokens saved (the official DP).

    ``dp[i] = max(dp[i-1], max_ws dp[i-ws] + count[i-ws+1][i])``; only a strict improvement changes
    the choice, so ties keep the single frame or the smallest window, as in the official loop.
    """
    t = above.shape[0] + 1
    count = static_window_counts(above, max_window_size)
    dp = [0] * t
    prev = [0] * t
    for i in range(t):
        best, start = (dp[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window_size) + 1):
            j = i - size
            value = (dp[j] if j >= 0 else 0) + count[j + 1][i]
            if value > best:
                best, start = value, j + 1
        dp[i], prev[i] = best, start
    windows = []
    i = t - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    return windows[::-1], dp[-1]


def largest_fitting_window(max_window_size: int, fits: Callable[[int], bool]) -> int:
    """The largest window cap w in [1, ``max_window_size``] for which ``fits(w)`` holds.

    ``fits`` must be monotone (once false, false for every larger cap: the DP over longer windows
    saves at least as much) and true at 1 (single-frame windows merge nothing). Binary search.
    """
    low, high = 1, max_window_size
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def merge_into_centres(x: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, beta: float) -> torch.Tensor:
    """Each centre absorbs the non-centre points labelled with it: beta*centre + (1-beta)*mean(members), or itself if none."""
    members = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    members[centres] = False
    sums = torch.zeros(centres.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, labels[members], x[members])
    counts = torch.bincount(labels[members], minlength=centres.numel()).to(x.dtype)[:, None]
    merged = beta * x[centres] + (1.0 - beta) * sums / counts.clamp(min=1.0)
    return torch.where(counts > 0, merged, x[centres])


def density_merge(x: torch.Tensor, n: int, k: int, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPC-KNN into ``n`` centres (k = min(k, n) neighbours), merged with beta.

    Returns (centre indices ascending, features, each row's position in the centres).
    """
    peaks = density_peaks(x, min(k, n))
    centres = top_centres(peaks.score, n)
    labels = assign_to_nearest(peaks.distance, centres)
    return centres, merge_into_centres(x, labels, centres, beta), labels


def holitom_select(
    features: torch.Tensor,
    saliency: torch.Tensor,
    *,
    retain_ratio: float,
    tau: float,
    beta: float,
    d: float,
    k: int,
    max_window_size: int,
    count: int | None = None,
) -> HoliTomResult:
    """HoliTom's outer stage on ``features`` [T, N, C] with per-token ``saliency`` [T, N]; float32.

    Without ``count`` this is the official computation: static windows by DP, r' = RETAIN_RATIO
    divided by the share left after static merging, round(L_s*r') static centres per window and
    ceil(L_dyn*r') dynamic tokens per frame (of which round(.*(1-D)) by saliency, the rest DPC-KNN
    merged contextual tokens; D > 0 crashes officially, here it works). With ``count`` the same
    groups (each window's static tokens, each frame's dynamic tokens) share exactly ``count``
    tokens in proportion to their sizes (:func:`vtc.budget.apportion`) instead of round/ceil per group,
    and when static merging would leave fewer than ``count`` tokens, the window cap is lowered to the
    largest at which it leaves enough (:func:`largest_fitting_window`): static positions are then kept
    once per shorter window, and ``tau`` still decides which positions are static.
    """
    t, n, _ = features.shape
    x = features.float()
    device = x.device
    normed = F.normalize(x, p=2, dim=-1)
    above = F.cosine_similarity(normed[:-1], normed[1:], dim=-1) > tau
    total = t * n
    max_window_size = min(max_window_size, t)
    windows, total_reduced = select_static_windows(above, max_window_size)
    left_at_max_window = total - total_reduced
    if count is not None and left_at_max_window < count:
        max_window_size = largest_fitting_window(
            max_window_size, lambda w: total - select_static_windows(above, w)[1] >= count
        )
        windows, total_reduced = select_static_windows(above, max_window_size)
    ratio = min(retain_ratio / ((total - total_reduced) / total), 1.0)

    masks = []
    for s, e in windows:
        masks.append(above[s:e].all(dim=0) if e > s else torch.zeros(n, dtype=torch.bool, device=device))
    if count is None:
        plan = []
        for (s, e), mask in zip(windows, masks):
            n_static, n_dynamic = int(mask.sum()), n - int(mask.sum())
            plan.append(round(n_static * ratio) if e > s else 0)
            plan += [math.ceil(n_dynamic * ratio)] * (e - s + 1)
    else:
        sizes = []
        for (s, e), mask in zip(windows, masks):
            sizes.append(int(mask.sum()) if e > s else 0)
            sizes += [n - int(mask.sum())] * (e - s + 1)
        plan = apportion(sizes, count)
        ratio = count / max(sum(sizes), 1)

    feats, pos, frame, static = [], [], [], []
    token_to_out = torch.full((t * n,), -1, dtype=torch.long, device=device)

    def emit(f: torch.Tensor, p: torch.Tensor, fr: int, is_static: bool, members: torch.Tensor, labels: torch.Tensor) -> None:
        """Append outputs; ``members`` [..., M] input tokens t*N+i and ``labels`` [M] their output among ``p``."""
        token_to_out[members] = sum(q.numel() for q in pos) + labels.expand_as(members)
        feats.append(f)
        pos.append(p)
        frame.append(torch.full_like(p, fr))
        static.append(torch.full_like(p, is_static, dtype=torch.bool))

    slot = iter(plan)
    positions = torch.arange(n, device=device)
    for (s, e), mask in zip(windows, masks):
        n_static = next(slot)
        if n_static > 0:
            centres, merged, labels = density_merge(x[s : e + 1, mask].mean(dim=0), n_static, k, beta)
            window = torch.arange(s, e + 1, device=device)[:, None] * n
            emit(merged, positions[mask][centres], s, True, window + positions[mask][None], labels)
        dynamic = positions[~mask]
        for f in range(s, e + 1):
            n_keep = next(slot)
            dominant_num = round(n_keep * (1 - d))
            dominant = torch.sort(top_k_stable(saliency[f, dynamic], dominant_num)).values
            emit(x[f, dynamic[dominant]], dynamic[dominant], f, False, f * n + dynamic[dominant],
                 torch.arange(dominant.numel(), device=device))
            if n_keep > dominant_num:
                rest = torch.ones(dynamic.numel(), dtype=torch.bool, device=device)
                rest[dominant] = False
                centres, merged, labels = density_merge(x[f, dynamic[rest]], n_keep - dominant_num, k, beta)
                emit(merged, dynamic[rest][centres], f, False, f * n + dynamic[rest], labels)
    return HoliTomResult(
        out_features=torch.cat(feats) if feats else x.new_zeros(0, x.shape[-1]),
        out_pos=torch.cat(pos) if pos else positions[:0],
        out_frame=torch.cat(frame) if frame else positions[:0],
        out_is_static=torch.cat(static) if static else torch.zeros(0, dtype=torch.bool, device=device),
        windows=torch.tensor(windows, dtype=torch.long, device=device).view(-1, 2),
        token_to_out=token_to_out,
        total_reduced=int(total_reduced),
        retain_after_static=ratio,
        max_window_size=max_window_size,
        left_at_max_window=int(left_at_max_window),
    )


@register("holitom")
@dataclass
class HoliTom(Method):
    """HoliTom outer stage: DP temporal windows, static tokens merged over each window, dynamic tokens by saliency.

    Paper: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models"
    (NeurIPS 2025); defaults from the official env knobs and scripts: RETAIN_RATIO 0.1 (scripts
    0.10-0.25), T (tau) 0.8 (0.65 with RETAIN_RATIO 0.10), BETA 0.6, D 0, K 7, MAX_WINDOW_SIZE 1024.

    1. ``sim[t, i]`` = cosine of the token at position i in frames t and t+1.
    2. A DP over frames picks the windows that save the most tokens when every position similar
       (> tau) across a whole window is kept once (:func:`select_static_windows`).
    3. r' = RETAIN_RATIO / (share left after static merging), capped at 1.
    4. Per window, the static positions' window-mean tokens are DPC-KNN clustered into
       round(L_s*r') centres (k = min(K, centres)); each centre becomes
       BETA*centre + (1-BETA)*mean(its members). Per frame, ceil(L_dyn*r') dynamic tokens are kept:
       round(.*(1-D)) with the highest saliency, the rest as DPC-KNN merged contextual centres.

    Budget: ``retain_ratio`` is RETAIN_RATIO (default 0.1 with no budget). A vtc budget replaces it
    and is met exactly: the groups above (each window's static tokens, each frame's dynamic tokens)
    share ``budget.count(N)`` tokens, one per non-empty group and the rest in proportion to their
    sizes (:func:`vtc.budget.apportion`), instead of the official per-group round/ceil (which lands near, not on,
    RETAIN_RATIO*N). ``tau`` left unset follows the scripts: 0.65 at a retain of at most 10%, else 0.8.

    Static content: the official code caps r' at 1, so when static merging alone leaves fewer tokens
    than RETAIN_RATIO*N it keeps them all and misses the ratio (on a mostly static 64 x 196 video, 196
    tokens at every ratio). vtc meets a budget by merging less over time, not by changing what counts
    as static: it lowers the window cap (MAX_WINDOW_SIZE) to the largest at which the DP's windows
    leave at least the budget, so each static position is kept once per shorter window, then clusters
    down to the budget as usual, and a note gives the cap. ``tau`` stays the paper's: raising it
    instead (vtc before issue 19) made almost nothing static on flat backgrounds, and selection fell
    to per-frame saliency alone (retain 0.5 scored below random at the 1,024-token tier; see
    ``eval/results/below_random_scale.md``). Without a budget (RETAIN_RATIO) the official behaviour,
    shortfall included, is kept. Per-frame budgets are refused (static tokens stand for whole windows).
    Passing both retain_ratio and a budget is refused.

    Positions: the official LLaVA path re-packs positions; vtc keeps original position ids. A
    static merged token takes the row of the cluster centre's position in the window's *first*
    frame; a dynamic token is its own row; a merged contextual token (D > 0) its centre's row.

    Saliency: the official input is the SigLIP last-layer attention averaged over heads and
    queries. On Qwen models the engine reads the vision tower's last block and supplies the
    pseudo-[CLS] (mean query) attention of :func:`vtc.saliency.ats_saliency`, the same reading
    FastVID uses for a ViT without [CLS] (mean over queries taken on the logits, not on the
    probabilities); else ``tokens.attn``; else the mean-token pseudo-[CLS] attention over each
    frame's LLM-input tokens (:func:`vtc.methods.frames.mean_token_saliency`), with a note.

    Deviations from the official code:

    * D > 0 crashes officially (a broadcast error gathering the contextual positions); here the
      contextual tokens are the intended DPC-KNN merged centres of each frame's non-dominant tokens.
    * Ties (saliency top-k, density scores) go to the lower index; the official density adds
      U(0, 1e-6) noise instead, which makes a single static centre (k = 1) random; the reference
      vectors do not depend on it.
    * The inner-LLM merge (HOLITOM_k / HOLITOM_r) is off unless ``inner_layer`` is set (the official
      code also runs it only when both are set; its 7B scripts use k=18 of 28 layers, r=0.5):
      ``holitom(inner_layer=K)`` then runs :class:`vtc.methods.holitom_inner.HoliTomInner` before
      layer K as a part of this method, on what the outer stage kept.
    * The official code runs on LLaVA's 2D-pooled frames; vtc runs on whatever grid the family's
      LLM input has (Qwen: merged 2x2 patches of temporal pairs).

    Complexity: windows O(T^2*N) tensor work plus an O(T*min(T, MAX_WINDOW_SIZE)) DP (O(log T) times
    when a budget lowers the cap); static merging O(L_s^2*C) per window; dynamic selection
    O(N log N) per frame (O(N^2*C) with D > 0).
    """

    retain_ratio: float | None = None
    tau: float | None = None
    beta: float = 0.6
    d: float = 0.0
    k: int = 7
    max_window_size: int = 1024
    inner_layer: int | None = None
    inner_ratio: float | None = None
    stage = "prefill"
    needs = frozenset({"vision_saliency"})
    exact_budget = True  # a vtc budget is met exactly, static content included (see the docstring)
    budget_knob = ("retain_ratio", "retain_ratio= (RETAIN_RATIO)")
    whole_video_only = "merges static tokens over whole windows of frames"

    def __post_init__(self) -> None:
        if self.inner_ratio is not None and self.inner_layer is None:
            raise ValueError("inner_ratio sets holitom's inner-LLM merge, which runs only with inner_layer= (HOLITOM_k)")
        if self.inner_layer is not None:
            HoliTomInner(layer=self.inner_layer, ratio=self._inner_ratio)  # validates both knobs now
        if self.retain_ratio is not None and not 0.0 < self.retain_ratio <= 1.0:
            raise ValueError(f"retain_ratio must be in (0, 1], got {self.retain_ratio}")
        if self.tau is not None and not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau is a cosine threshold: it must be in [-1, 1], got {self.tau}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta (centre weight) must be in [0, 1], got {self.beta}")
        if not 0.0 <= self.d <= 1.0:
            raise ValueError(f"d (contextual share of dynamic tokens) must be in [0, 1], got {self.d}")
        for knob in ("k", "max_window_size"):
            value = getattr(self, knob)
            if value < 1:
                raise ValueError(f"{knob} must be an int >= 1, got {value!r}")

    @property
    def _inner_ratio(self) -> float:
        return DEFAULT_INNER_RATIO if self.inner_ratio is None else self.inner_ratio

    def parts(self, num_layers: int, budget: Budget) -> list[tuple[Method, Budget | None]]:
        if self.inner_layer is None:
            return [(self, None)]
        return [(self, None), (HoliTomInner(layer=self.inner_layer, ratio=self._inner_ratio), Budget())]

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        budget = self.resolve_budget(budget)
        rows = whole_frames(tokens, self.name)
        x = tokens.features[rows].float()
        saliency, notes = row_saliency(tokens, rows, x)
        count = budget.count(len(tokens)) if budget.is_set else None
        if count is None:
            ratio = DEFAULT_RETAIN if self.retain_ratio is None else self.retain_ratio
        else:
            ratio = budget.retain if budget.retain is not None else count / len(tokens)
        tau = self.tau if self.tau is not None else (LOW_RETAIN_TAU if ratio <= DEFAULT_RETAIN + 1e-9 else DEFAULT_TAU)
        result = holitom_select(
            x, saliency, retain_ratio=ratio, tau=tau, beta=self.beta, d=self.d, k=self.k,
            max_window_size=self.max_window_size, count=count,
        )
        if result.left_at_max_window < (count or 0):
            notes.append(f"windows capped at {result.max_window_size} frames: static merging over the DP's windows "
                         f"(at most {self.max_window_size} frames, tau {tau:g}) leaves {result.left_at_max_window} "
                         f"tokens, fewer than the budget of {count}")
        left = len(tokens) - result.total_reduced
        if count is None and left < ratio * len(tokens):
            notes.append(f"retain_ratio {ratio:g} asks for about {ratio * len(tokens):.0f} tokens; static merging "
                         f"left only {left} (r' capped at 1, as the official code)")
        keep = rows[result.out_frame, result.out_pos]
        order = torch.argsort(keep)
        return Selection(keep=keep[order], features=result.out_features[order].to(tokens.features.dtype), notes=notes,
                         merged_into=merged_positions(rows.flatten(), result.token_to_out, order, len(tokens)))
