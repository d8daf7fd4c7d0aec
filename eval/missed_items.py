"""Which synthetic items a compressed model gets wrong, and which visual tokens it kept for them.

Accuracy says how often a method fails; this says why: for each missed item it prints the evidence
tokens (t, h, w) the question needs, how many of them survived, every kept token, and the objects drawn
in the video (colour, shape, frames; * marks the evidence), so "dropped the evidence", "kept it but the
model misread it" and "answered about another object" can be told apart. Run from the repository root:

    python eval/missed_items.py .cache/synth/heldout-240 --method trained:eval/results/adapters/scorer/retain-0.1 \
        --types needle,order
"""
from __future__ import annotations

import argparse
from pathlib import Path

import vtc
from vtc.runner import default_model_path, generate_answers, load_model
from vtc.synth.dataset import scene_spec
from vtc.synth.evaluate import final_kept, evidence_tokens, prepare
from vtc.synth.model import parse_answer
from vtc.synth.tiers import DEFAULT_TIER, TIERS, get_tier
from vtc.video import load_video


def cells(tokens: set[int] | list[int], grid: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Token indices as (t, h, w) on the merged grid."""
    _, height, width = grid
    return sorted((k // (height * width), k // width % height, k % width) for k in tokens)


def objects(item: dict, video: Path) -> str:
    """The sprites of the item's scene, rebuilt from its seed at the video's own size and length."""
    decoded = load_video(video, num_frames=1)
    size, frames = decoded.frames.shape[1], decoded.total_frames
    spec, _, _ = scene_spec(item["seed"], item["type"], item["answer"], item["answer_text"], frames, size)
    shown = []
    for sprite in spec.sprites:
        seen = sorted(sprite.track)
        span = f"{seen[0]}-{seen[-1]}" if seen == list(range(seen[0], seen[-1] + 1)) else ",".join(map(str, seen))
        shown.append(f"{sprite.color} {sprite.shape} frames {span}{'*' if sprite.evidence else ''}")
    return "; ".join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a `vtc synth make` directory")
    parser.add_argument("--method", required=True, help="a method name or trained:DIR")
    parser.add_argument("--retain", type=float, help="budget (default: the method's or the adapter's)")
    parser.add_argument("--model", help="local checkpoint (default: the shipped reference model)")
    parser.add_argument("--types", help="comma-separated question types (default: all)")
    parser.add_argument("--limit", type=int, default=240)
    parser.add_argument("--tier", default=DEFAULT_TIER, choices=sorted(TIERS),
                        help="the benchmark tier the data was made at (its frame count is what the model sees)")
    args = parser.parse_args()
    types = set(args.types.split(",")) if args.types else None
    model, processor = load_model(args.model or default_model_path(), device="cpu")
    vtc.wrap(model, args.method, **({"retain": args.retain} if args.retain is not None else {}))
    missed = total = 0
    num_frames = get_tier(args.tier).num_frames
    for batch in prepare(args.data, processor, num_frames=num_frames, limit=args.limit, progress=False):
        replies = generate_answers(model, processor, batch.inputs, max_new_tokens=3)
        for b, (item, reply, grid) in enumerate(zip(batch.items, replies, batch.grids)):
            if types is not None and item["type"] not in types:
                continue
            total += 1
            if parse_answer(reply, item["options"]) == item["answer"]:
                continue
            missed += 1
            kept = final_kept(model.vtc_stats, b)
            evidence = evidence_tokens(item, grid)
            print(f"{item['video']} {item['type']}: answer {item['answer_text']!r}, reply {reply!r}; "
                  f"evidence kept {len(evidence & set(kept))}/{len(evidence)} {cells(evidence, grid)}; "
                  f"kept {cells(kept, grid)}; objects: {objects(item, args.data / item['video'])}")
    print(f"missed {missed} of {total}")


if __name__ == "__main__":
    main()
