"""The FLOP budget: multiply-adds per preset and per component.

    python -m benchmarks.flops                 # markdown tables
    python -m benchmarks.flops --json          # {"presets": {name: {"total_gmacs": ...}}}

One clip (all streams), one 16-token question, an 8-token answer, batch 1.
GMACs = 1e9 multiply-adds (the "GFLOPs" of X3D-era video papers);
GFLOPs = 2 x GMACs. See ``cotok_edge/flops.py`` for what is counted.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.flops import Budget, model_budget
from cotok_edge.model.config import PRESETS

# The paper's figures, in its own (MAC) convention: (figure, ratio to its 67).
# It states 360 for a 3D-ResNet with text and "more than twice as efficient as
# X3D", so only a lower bound for X3D.
PAPER_FIGURES = {
    "paper": ("67", "1.00"),
    "baseline-3dresnet": ("360", f"{360 / 67:.2f}"),
    "baseline-x3d": ("> 134", "> 2"),
}
# Targets of this project, in GMACs: (low, high).
TARGETS = {"paper": (55.0, 67.0), "edge": (0.0, 20.0)}


def _group(b: Budget) -> dict[str, float]:
    g = {"backbones": 0.0, "text encoder": 0.0, "co-tokenization": 0.0, "decoder": 0.0}
    for name, macs in b.components.items():
        if name.startswith("backbone:"):
            g["backbones"] += macs
        elif name.startswith("co-tokenization") or name == "video projection":
            g["co-tokenization"] += macs
        elif name == "text encoder":
            g["text encoder"] += macs
        else:
            g["decoder"] += macs
    return {k: v / 1e9 for k, v in g.items()}


def summary_table(budgets: dict[str, Budget]) -> str:
    ref = budgets.get("paper")
    rows = [
        "| preset | backbones | text encoder | co-tokenization | decoder (8 tok) | total GMACs "
        "| total GFLOPs (2x) | x paper preset | target (GMACs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, b in budgets.items():
        g = _group(b)
        total = b.total / 1e9
        ratio = f"{b.total / ref.total:.2f}" if ref else "-"
        lo, hi = TARGETS.get(name, (None, None))
        if hi is None:
            target = "-"
        else:
            ok = lo <= total <= hi
            target = f"{lo:g}-{hi:g}: {'met' if ok else 'MISSED'}"
        rows.append(
            f"| {name} | {g['backbones']:.2f} | {g['text encoder']:.3f} | "
            f"{g['co-tokenization']:.2f} | {g['decoder']:.3f} | {total:.2f} | {2 * total:.2f} | "
            f"{ratio} | {target} |"
        )
    return "\n".join(rows)


def component_table(b: Budget) -> str:
    rows = [f"| {b.preset}: component | GMACs | share |", "|---|---:|---:|"]
    for name, macs in b.components.items():
        rows.append(f"| {name} | {macs / 1e9:.3f} | {100 * macs / b.total:.1f}% |")
    rows.append(f"| **total** | **{b.total / 1e9:.3f}** | 100% |")
    return "\n".join(rows)


def paper_comparison(budgets: dict[str, Budget]) -> str:
    if "paper" not in budgets:
        return ""
    ours = budgets["paper"].total / 1e9
    rows = [
        "| model | ours (GMACs) | ratio to ours `paper` | paper's figure (GFLOPs = GMACs) "
        "| paper's ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (figure, paper_ratio) in PAPER_FIGURES.items():
        if name in budgets:
            g = budgets[name].total / 1e9
            rows.append(f"| {name} | {g:.1f} | {g / ours:.2f} | {figure} | {paper_ratio} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--question-len", type=int, default=16)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    budgets = {
        p: model_budget(CoTokVQA(CoTokConfig.preset(p)), args.question_len) for p in args.presets
    }
    if args.json:
        out = {
            "convention": "GMACs = 1e9 multiply-adds; GFLOPs = 2 x GMACs",
            "question_tokens": args.question_len,
            "answer_tokens": 8,
            "presets": {
                p: {
                    "total_gmacs": b.total / 1e9,
                    "total_gflops": 2 * b.total / 1e9,
                    "components_gmacs": {k: v / 1e9 for k, v in b.components.items()},
                }
                for p, b in budgets.items()
            },
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        "FLOP budget: one clip, one 16-token question, 8 answer tokens, batch 1. "
        "GMACs = 1e9 multiply-adds (the papers' 'GFLOPs'); GFLOPs = 2 x GMACs.\n"
    )
    print(summary_table(budgets))
    comparison = paper_comparison(budgets)
    if comparison:
        print("\n" + comparison)
    for p in ("paper", "edge"):
        if p in budgets:
            print("\n" + component_table(budgets[p]))
    missed = [
        p
        for p, (lo, hi) in TARGETS.items()
        if p in budgets and not lo <= budgets[p].total / 1e9 <= hi
    ]
    if missed:
        print(f"\nMISSED budget target: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
