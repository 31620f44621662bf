"""The PNG plots of RESULTS.md, drawn from the results dict of ``python -m benchmarks``.

``write_all(results, folder)`` writes what the results support and returns
``{plot: file name}`` (relative to ``folder``, where the report is). matplotlib's
object API with the Agg canvas: no display, no global pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUPS = ("backbones", "text encoder", "co-tokenization", "decoder")
# The paper's figures in its convention ('GFLOPs' = multiply-adds): (label, value).
PAPER_MARKS = {
    "paper": ("paper: 67", 67.0),
    "baseline-3dresnet": ("paper: 360", 360.0),
    "baseline-x3d": ("paper: > 134", 134.0),
}


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def budget_plot(flops: dict[str, Any], path: Path) -> None:
    """Stacked GMACs per component group for every preset, with the paper's figures."""
    presets = flops["presets"]
    names = list(presets)
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    bottom = [0.0] * len(names)
    for g in GROUPS:
        vals = [presets[n]["groups_gmacs"].get(g, 0.0) for n in names]
        ax.bar(names, vals, bottom=bottom, label=g)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, n in enumerate(names):
        ax.text(
            i,
            bottom[i] / 1.08,
            f"{bottom[i]:.1f}",
            ha="center",
            va="top",
            fontsize=8,
            color="white",
            fontweight="bold",
        )
        if n in PAPER_MARKS:
            label, v = PAPER_MARKS[n]
            ax.plot([i - 0.4, i + 0.4], [v, v], "k--", lw=1)
            ax.text(i, v * 1.04, label, ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(min(bottom) / 2, max([*bottom, 360.0]) * 1.6)
    ax.set_ylabel("GMACs per clip + question (log)")
    ax.set_title("FLOP budget per preset (dashed: the paper's figures)")
    ax.legend(fontsize=8, loc="upper left")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path)


def accuracy_plot(models: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against GMACs, one point per trained model (any number of them)."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for m in models:
        x, y = m.get("gmacs"), m.get("accuracy")
        if x is None or y is None:
            continue
        ax.scatter([x], [100 * y], s=30)
        ax.annotate(
            str(m.get("name", "?")),
            (x, 100 * y),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.axhline(25, color="grey", lw=0.8, ls=":", label="chance (4-way categories)")
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per clip + question (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Trained models: accuracy against compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def latency_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """p50 of each stage, stacked, per backend x precision x preset row."""
    rows = [r for r in rows if "single" in r]
    labels = [f"{r['preset']}\n{r.get('backend')}\n{r['precision']}" for r in rows]
    fig = _figure(max(4.0, 1.3 * len(rows) + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    bottom = [0.0] * len(rows)
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        vals = [r["single"].get(stage, {}).get("p50", 0.0) for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("ms per call, one question (p50)")
    ax.set_title("Runtime latency per stage (frames in memory)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)


def write_all(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """Every plot the results allow, into ``folder``; ``{plot: file name}``."""
    folder = Path(folder)
    out: dict[str, str] = {}
    if (results.get("flops") or {}).get("presets"):
        budget_plot(results["flops"], folder / "budget.png")
        out["budget"] = "budget.png"
    if results.get("trained_models"):
        accuracy_plot(results["trained_models"], folder / "accuracy_vs_gmacs.png")
        out["accuracy"] = "accuracy_vs_gmacs.png"
    rows = (results.get("latency") or {}).get("rows") or []
    if any("single" in r for r in rows):
        latency_plot(rows, folder / "latency.png")
        out["latency"] = "latency.png"
    return out
