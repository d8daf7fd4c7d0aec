"""``vtc viz``: registered without importing torch (the handler imports what it needs)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register_cli(commands: argparse._SubParsersAction) -> None:
    viz = commands.add_parser(
        "viz", help="draw which visual tokens survive compression over the frames the model saw",
        description="Render the frames the model saw with the tokens that enter the LLM bright, dropped ones dimmed, "
                    "merged ones outlined in their representative's colour, and tokens in/out per stage.",
    )
    viz.add_argument("video", help="a video file, or a `vtc synth make` directory (with --index: its evidence boxes)")
    viz.add_argument("--method", required=True, help="method name or spec, e.g. 'dtd' or 'dtd:0.5>fastv@2:0.5'")
    budget = viz.add_mutually_exclusive_group()
    budget.add_argument("--retain", type=float, help="fraction of visual tokens to keep")
    budget.add_argument("--tokens", type=int, help="absolute number of visual tokens to keep")
    viz.add_argument("--model", help="local checkpoint directory (default: the shipped reference model)")
    viz.add_argument("--out", type=Path, default=Path("vtc_viz.png"), help="FILE.png, FILE.gif or FILE.mp4")
    viz.add_argument("--index", type=int, default=0, help="item of a synthetic dataset directory (default 0)")
    viz.add_argument("--question", help="prompt for question-aware methods (default: the item's, or a generic one)")
    viz.add_argument("--num-frames", type=int, default=16, help="evenly spaced frames to decode (default 16)")
    viz.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    viz.set_defaults(handler=_viz)


def _viz(args: argparse.Namespace) -> int:
    from .render import save, visualise

    rendering = visualise(args.video, args.method, retain=args.retain, tokens=args.tokens, model_path=args.model,
                          index=args.index, question=args.question, num_frames=args.num_frames, device=args.device)
    print(rendering.stats.table())
    print(f"wrote {save(rendering, args.out)}")
    return 0
