"""Compare training runs per question category, from their ``metrics.jsonl``.

    python -m benchmarks.ablations --run three-stream=runs/tiny-v2 --run s1=runs/abl-s1 \
        [--step 1000] [--png benchmarks/ablations.png]

Each run folder is one ``python -m cotok_edge.train`` output; its validation
evaluations (``eval`` records, every ``--eval-every`` steps) are read as written,
nothing is re-run. ``--step`` picks the evaluation to compare (default: each
run's last); runs without an evaluation at that step are an error that names them.
Prints a markdown table (overall and per category, with the run's seed and
command) and, with ``--png``, draws the per-category bars beside it. Runs given
under one label (``--run s2=runs/s2-seed0 --run s2=runs/s2-seed1``) are seeds of
one configuration: they make one row, the mean with each seed's value after it,
and one bar with each seed drawn as a dot.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORY_NAMES = {"0": "fine space", "1": "fine time", "2": "both", "3": "coarse"}


@dataclass
class RunEval:
    """One run's validation evaluation at one step."""

    label: str
    folder: Path
    step: int
    accuracy: float
    per_category: dict[str, float]
    count: int
    seed: int | None
    args: dict[str, Any]


def read_eval(label: str, folder: Path, step: int | None = None) -> RunEval:
    """The evaluation of ``folder/metrics.jsonl`` at ``step`` (None: the last one)."""
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"run {label!r}: {metrics} does not exist")
    evals: dict[int, dict[str, Any]] = {}
    with open(metrics) as f:
        for n, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"run {label!r}: {metrics} line {n}: not JSON ({e})") from None
            if "eval" in record:
                evals[int(record["step"])] = record["eval"]
    if not evals:
        raise ValueError(f"run {label!r}: {metrics} has no evaluation records")
    at = max(evals) if step is None else step
    if at not in evals:
        raise ValueError(
            f"run {label!r}: no evaluation at step {at} in {metrics} (has {sorted(evals)})"
        )
    e = evals[at]
    args = _run_args(folder)
    return RunEval(
        label, folder, at, float(e["accuracy"]),
        {k: float(v["accuracy"]) for k, v in sorted(e["per_category"].items())},
        int(e["count"]), args.get("seed"), args,
    )  # fmt: skip


def _run_args(folder: Path) -> dict[str, Any]:
    """The run's command-line arguments, from its checkpoint's train_state.json."""
    for state in (
        folder / "checkpoint" / "train_state.json",
        folder / "model" / "train_state.json",
    ):
        if state.is_file():
            return dict(json.loads(state.read_text()).get("args") or {})
    return {}


def by_label(runs: list[RunEval]) -> dict[str, list[RunEval]]:
    """The runs grouped by label (the seeds of one configuration), in the order given."""
    groups: dict[str, list[RunEval]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    return groups


def _cell(values: list[float | None]) -> str:
    """Mean in %, then each seed's value when there are several; "-" when none has one."""
    if any(v is None for v in values):
        return "-"
    pct = [100 * v for v in values]
    mean = f"{sum(pct) / len(pct):.1f}%"
    return mean if len(pct) == 1 else f"{mean} ({', '.join(f'{v:.1f}' for v in pct)})"


def table(runs: list[RunEval]) -> str:
    """Markdown: one row per label, overall and per-category accuracy in %.

    A label with several runs shows the mean over them and each run's value.
    """
    cats = sorted({c for r in runs for c in r.per_category})
    head = ["run", "step", "questions", "overall"] + [CATEGORY_NAMES.get(c, c) for c in cats]
    rows = ["| " + " | ".join(head + ["seed", "differs from the default by"]) + " |"]
    rows.append("|" + "---|" * 2 + "---:|" * (len(head) - 2) + "---:|---|")
    for label, group in by_label(runs).items():
        steps = sorted({r.step for r in group})
        cells = [label, ", ".join(map(str, steps)), str(group[0].count)]
        cells.append(_cell([r.accuracy for r in group]))
        cells += [_cell([r.per_category.get(c) for r in group]) for c in cats]
        cells += [", ".join(str(r.seed) for r in group), _differences(group[0].args)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _differences(args: dict[str, Any]) -> str:
    keep = []
    if args.get("streams"):
        keep.append(f"--streams {args['streams']}")
    if args.get("cotok_steps"):
        keep.append(f"--cotok-steps {args['cotok_steps']}")
    if args.get("init"):
        keep.append(f"--init {args['init']}")
    if args.get("fraction", 1.0) != 1.0:
        keep.append(f"--fraction {args['fraction']}")
    if args.get("stop_at"):
        keep.append(f"--stop-at {args['stop_at']}")
    if args.get("stream_dropout"):
        keep.append(f"--stream-dropout {args['stream_dropout']}")
    return ", ".join(keep) or "-"


def plot(runs: list[RunEval], png: Path) -> None:
    """Grouped bars: accuracy per category (and overall) for each label, its runs as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cats = sorted({c for r in runs for c in r.per_category})
    groups = ["overall"] + [CATEGORY_NAMES.get(c, c) for c in cats]
    fig = Figure(figsize=(8, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = by_label(runs)
    width = 0.8 / len(labels)
    for k, (label, group) in enumerate(labels.items()):
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        per_run = [[r.accuracy] + [r.per_category.get(c, 0.0) for c in cats] for r in group]
        means = [100 * sum(col) / len(col) for col in zip(*per_run, strict=True)]
        steps = ", ".join(str(s) for s in sorted({r.step for r in group}))
        seeds = f", {len(group)} seeds" if len(group) > 1 else ""
        bars = ax.bar(xs, means, width, label=f"{label} (step {steps}{seeds})")
        if len(group) > 1:
            for vals in per_run:
                ax.plot(xs, [100 * v for v in vals], "o", ms=3, color="black",
                        markerfacecolor=bars.patches[0].get_facecolor())  # fmt: skip
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title("Ablations, per question category")
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(png)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__)
    p.add_argument("--run", action="append", required=True, help="LABEL=RUN_FOLDER")
    p.add_argument("--step", type=int, help="compare the evaluations at this step")
    p.add_argument("--png", type=Path, help="also draw the bars here")
    args = p.parse_args(argv)
    runs = []
    try:
        for spec in args.run:
            label, sep, folder = spec.partition("=")
            if not sep or not label or not folder:
                p.error(f"--run {spec!r}: expected LABEL=RUN_FOLDER")
            runs.append(read_eval(label, Path(folder), args.step))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(runs))
    if args.png:
        plot(runs, args.png)
        print(f"\n![ablations]({args.png.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
