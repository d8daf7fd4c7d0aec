"""Base classes every compression method derives from."""
from __future__ import annotations

from typing import ClassVar, Literal, Sequence

import torch

from .budget import Budget
from .tokens import Selection, VisualTokens

Stage = Literal["select", "vision", "prefill", "layer", "cache"]


class Method:
    """A compression method: a dataclass of validated knobs plus ``compress``.

    Subclasses set ``name`` and ``stage`` and declare which optional inputs they need (``needs`` is a
    subset of {"attn", "pixels", "query", "vision_saliency"}, selectors also "times") so the engine can
    provide them and refuse clearly when a family cannot: a class attribute, or a property where a knob
    decides (``dtd(mode=pixel)``, ``keyclips(relevance=query)``). Layer-stage methods also have an int ``layer``
    (or act at several layers through ``parts``).

    A method that acts at several points (several layer cuts, or a prefill stage plus a layer stage)
    says so in ``parts``: the engine runs each part as a step of its own.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "prefill"
    needs: ClassVar[frozenset[str]] = frozenset()
    # (field, how to describe it): the paper's own knob, which replaces a vtc budget; a method
    # that declares one runs on its paper defaults when neither is given.
    budget_knob: ClassVar[tuple[str, str] | None] = None
    # Why a per-frame budget cannot apply (None: per-frame budgets are fine).
    whole_video_only: ClassVar[str | None] = None
    # Layer stage: whose attention ranks the tokens at a cut before layer K. "previous": the last prompt
    # token's attention inside layer K-1 (FastV); "own": layer K's attention on its input, computed
    # before the layer runs (PyramidDrop's rank-and-drop).
    attention_from: ClassVar[str] = "previous"
    # True when compress() keeps exactly Budget.count of what it receives (per frame under scope="frame")
    # whenever a vtc budget is set, whatever the features: a serving engine (vLLM) sizes a prompt before any
    # feature exists and relies on it. tests/test_exact_budget.py holds every method that claims it to it.
    exact_budget: ClassVar[bool] = False

    def parts(self, num_layers: int, budget: Budget) -> list[tuple["Method", Budget | None]]:
        """The steps this method runs as on a language model of ``num_layers`` layers, each with its own
        budget (None: the step's); ``budget`` is the one it resolved. Most methods are one part: themselves."""
        return [(self, None)]

    def min_retain(self, num_layers: int) -> float:
        """The smallest FLOP-equivalent retention this method can reach on a model of that depth (a budget
        below it is refused: a layer method keeps every token in the layers before its first cut)."""
        return 0.0

    def entry_budget(self, entered: int) -> Budget | None:
        """A budget fixed by the visual tokens that entered the language model (cuts of a schedule, whose
        counts are shares of that number), or None to use the step's budget."""
        return None

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        raise NotImplementedError

    def kept_count(self, frame_sizes: Sequence[int], budget: Budget) -> int | None:
        """Tokens compress() keeps of a video whose frames hold ``frame_sizes`` tokens, when those sizes and the
        budget alone decide it; None when the features do (a threshold, a paper knob, a structured method)."""
        if not (self.exact_budget and budget.is_set):
            return None
        if budget.scope == "frame":
            return sum(budget.count(n) for n in frame_sizes)
        return budget.count(sum(frame_sizes))

    def resolve_budget(self, budget: Budget) -> Budget:
        """The budget this method runs with, refusing combinations that cannot mean anything.

        Without a paper knob, an unset budget is refused: keeping everything would be a silent no-op.
        """
        if self.whole_video_only is not None and budget.scope == "frame":
            raise ValueError(f"{self.name} {self.whole_video_only}: use a video-level budget")
        if self.budget_knob is None:
            if not budget.is_set:
                raise ValueError(
                    f"method {self.name!r} needs a budget: pass retain= or tokens= (or name:0.25 in a spec)"
                )
            return budget
        knob, description = self.budget_knob
        if budget.is_set and getattr(self, knob) is not None:
            raise ValueError(f"{self.name} takes either {description} or a budget (retain/tokens), not both")
        return budget

    def describe(self) -> str:
        fields = getattr(self, "__dataclass_fields__", {})
        knobs = ", ".join(f"{k}={getattr(self, k)!r}" for k in fields)
        return f"{self.name}({knobs})"


class ScoreMethod(Method):
    """A method that only scores tokens; the base class keeps the top-scoring ones under the budget.

    Higher score = more worth keeping. Ties are broken towards the lower index so results are
    deterministic across devices.
    """

    exact_budget = True  # the budgeted top-k

    def score(self, tokens: VisualTokens) -> torch.Tensor:
        raise NotImplementedError

    def compress(self, tokens: VisualTokens, budget: Budget) -> Selection:
        scores = self.score(tokens)
        if scores.shape != (len(tokens),):
            raise ValueError(f"{self.name}.score returned shape {tuple(scores.shape)}, expected ({len(tokens)},)")
        if budget.scope == "frame":
            keep = torch.cat([rows[top_k_stable(scores[rows], budget.count(rows.numel()))] for rows in tokens.frames()])
        else:
            keep = top_k_stable(scores, budget.count(len(tokens)))
        return Selection(keep=torch.sort(keep).values)


def top_k_stable(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores; equal scores prefer the lower index (unlike torch.topk on CPU)."""
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:k]
