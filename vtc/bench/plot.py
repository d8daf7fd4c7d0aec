"""One PNG per sweep: score vs retention for each task, and prefill speed-up vs retention."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import series

MARKERS = "osD^vP*Xh<>p"


def plot(results: dict[str, Any], path: str | Path) -> Path:
    """Draw ``report.series(results)`` (one panel per task, then speed-up) and save it as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = series(results)
    methods = sorted({label for lines in panels.values() for label in lines if label != "baseline"})
    styles = {m: (plt.cm.tab20(i % 20), MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for axis, (panel, lines) in zip(axes[0], panels.items()):
        for label, points in lines.items():
            xs, ys = zip(*points)
            if label == "baseline":
                axis.axhline(ys[0], color="black", linestyle="--", linewidth=1, label="baseline")
            else:
                color, marker = styles[label]
                axis.plot(xs, ys, color=color, marker=marker, label=label)
        axis.set_xlabel("retention (visual tokens kept / in)")
        axis.set_ylabel(panel if panel == "speed-up" else _metric(results, panel))
        axis.set_title(f"{panel} vs retention" if panel == "speed-up" else panel)
        axis.set_xlim(0, 1.05)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"vtc bench: {results['suite_name']}")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _metric(results: dict[str, Any], task: str) -> str:
    baseline = next(c for c in results["cells"] if c["method"] is None)
    return f"{task} {baseline['scores'][task]['metric']}"
