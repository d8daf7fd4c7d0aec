"""``vtc dymu-thresholds``: estimate DyMU's per-block merge thresholds for a model from unlabeled videos.

As the official threshold finder: the tower runs with a fixed number of merges per block (the "constant"
schedule for a target retention); at each block the threshold of a batch (here: one video's frame groups)
is the similarity of its best pair not merged, the ``r x frames``-th best A-to-B similarity pooled over
the batch, floored at 0; the thresholds are averaged over videos. Only the vision tower runs. The result is
written beside the model (``vtc_dymu_thresholds.json``), where ``vtc.wrap(model, "dymu")`` finds it.
Deviation: the official finder merges the ``r x batch`` best pairs over the whole batch; here each frame
group merges its own ``r`` (the pooled rank still defines the threshold).
"""
from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

COMMAND = "dymu-thresholds"


def register_cli(commands: argparse._SubParsersAction) -> None:
    finder = commands.add_parser(COMMAND, help="estimate DyMU's per-block merge thresholds from unlabeled videos")
    finder.add_argument("model", help="local checkpoint directory (the thresholds are written into it)")
    finder.add_argument("videos", nargs="+", help="unlabeled local video files")
    finder.add_argument("--retain", type=float, default=0.5, help="target share of tokens kept per frame (default 0.5)")
    finder.add_argument("--num-frames", type=int, default=16, help="frames decoded per video (default 16)")
    finder.add_argument("--out", type=Path, help="where to write the JSON (default: MODEL/vtc_dymu_thresholds.json)")
    finder.add_argument("--device", default="auto")
    finder.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from .budget import Budget
    from .runner import load_model

    Budget(retain=args.retain)  # refuse a bad retain before loading anything
    model, processor = load_model(args.model, device=args.device)
    result = estimate(model, processor, args.videos, args.retain, args.num_frames)
    out = args.out or Path(args.model) / "vtc_dymu_thresholds.json"
    result["model"] = str(args.model)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {len(result['thresholds'])} block thresholds to {out}")
    return 0


class _FinderStage:
    """What the adapter's tower hooks ask of a vision stage, for a run outside vtc.wrap: always active,
    a fixed-count DyMU, and a sink for each block's similarities."""

    def __init__(self, retain: float) -> None:
        from .budget import Budget
        from .methods.dymu import DyMU

        self.active = True
        self.method = DyMU()
        self.budget = Budget(retain=retain)
        self.blocks: dict[int, list[float]] = {}

    def record(self, *_: Any) -> None:
        """Selections are not needed here."""

    def similarity_sink(self, block: int, per_frame: Sequence[Any], merges_per_frame: int) -> None:
        import torch

        pooled = torch.cat([s.flatten().float() for s in per_frame]) if per_frame else torch.zeros(0)
        if not pooled.numel():
            return
        rank = min(merges_per_frame * len(per_frame), pooled.numel() - 1)
        self.blocks.setdefault(block, []).append(max(float(torch.sort(pooled, descending=True).values[rank]), 0.0))


def estimate(model: Any, processor: Any, videos: Sequence[str], retain: float, num_frames: int) -> dict:
    """Per-block thresholds averaged over ``videos`` (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm

    from .patches import adapter_for
    from .runner import build_inputs
    from .video import load_video

    adapter = adapter_for(model)
    if adapter.vision_stage != "tower":
        raise ValueError(f"dymu merges inside the vision tower's blocks, which vtc does not hook on {adapter.family}")
    stage = _FinderStage(retain)
    removers = adapter.install_vision_stage(stage)
    encode = getattr(adapter.base_model(), adapter.video_encoder)
    named = {n for n, p in inspect.signature(encode).parameters.items() if p.kind is not p.VAR_KEYWORD}
    try:
        for path in tqdm(videos, desc="dymu thresholds", unit="video"):
            inputs = build_inputs(processor, [load_video(path, num_frames=num_frames)], ["Describe the video."])
            inputs = inputs.to(model.device)
            with torch.no_grad():
                encode(**{k: v for k, v in inputs.items() if k in named})
    finally:
        for remove in reversed(removers):
            remove()
    blocks = sorted(stage.blocks)
    return {
        "method": "dymu", "retain": retain, "videos": len(videos), "frames_per_video": num_frames,
        "thresholds": [sum(stage.blocks[b]) / len(stage.blocks[b]) for b in blocks],
    }
