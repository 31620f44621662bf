"""The model on CUDA: eager against ``torch.compile``, reference against fused TokenLearner.

    python -m benchmarks.model_gpu [--presets edge paper] [--batches 1 8] [--runs 50]
        [--warmup 10] [--no-compile] [--out model.md] [--json model.json]

For each preset (random weights), batch, TokenLearner (the reference, or the fused
Triton op via ``enable_fused_tokenlearner``) and mode (eager, ``torch.compile``): one
forward pass of ``CoTokVQA`` (three backbones, K co-tokenization steps, the decoder's
first answer position) under FP16 autocast and ``inference_mode``, timed with CUDA
events: ``--warmup`` calls (which include compiling), then ``--runs`` timed calls;
p50/p90/p99 and clips/s. Without CUDA it exits with status 2 (nothing measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.kernels import cuda_event_times


def time_cuda(fn: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    """CUDA-event milliseconds of ``fn()``: warm-up calls, then ``runs`` timed calls."""
    a = np.asarray(cuda_event_times(fn, runs, warmup))
    return {f"p{q}": round(float(np.percentile(a, q)), 4) for q in (50, 90, 99)}


def set_fused(on: bool) -> bool:
    """Route CUDA TokenLearners through the fused op (True) or the reference; whether it can."""
    try:
        from cotok_edge.kernels import _dispatch
        from cotok_edge.kernels.triton_tokenlearner import (
            enable_fused_tokenlearner,
            triton_available,
        )
    except ImportError:
        return not on
    if on:
        if not triton_available():
            return False
        enable_fused_tokenlearner()
    else:
        _dispatch.STATE.cuda_enabled = False
    return True


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from cotok_edge import CoTokConfig, CoTokVQA

    rows: list[dict[str, Any]] = []
    for preset in args.presets:
        torch.manual_seed(0)
        model = CoTokVQA(CoTokConfig.preset(preset)).cuda().eval()
        for fused in (False, True):
            if not set_fused(fused):
                rows.append({"preset": preset, "fused": fused, "error": "Triton not installed"})
                continue
            modes = ["eager"] + ([] if args.no_compile else ["compile"])
            for mode in modes:
                torch._dynamo.reset()
                fn = model if mode == "eager" else torch.compile(model, dynamic=False)
                for batch in args.batches:
                    inputs = {k: v.cuda() for k, v in model.example_inputs(batch).items()}
                    row: dict[str, Any] = {
                        "preset": preset,
                        "batch": batch,
                        "mode": mode,
                        "fused": fused,
                    }

                    def call(fn: Any = fn, inputs: dict[str, Any] = inputs) -> object:
                        with torch.inference_mode(), torch.autocast("cuda", torch.float16):
                            return fn(**inputs).logits

                    try:
                        row["ms"] = time_cuda(call, args.runs, args.warmup)
                        row["clips_per_s"] = round(1000 * batch / row["ms"]["p50"], 1)
                    except Exception as e:  # noqa: BLE001 - reported in the table
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        set_fused(False)
        del model
        torch.cuda.empty_cache()
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = {
        (r["preset"], r.get("batch")): r["ms"]["p50"]
        for r in rows
        if r.get("mode") == "eager" and not r["fused"] and "ms" in r
    }
    lines = [
        f"# The model on {torch.cuda.get_device_name()}",
        "",
        f"`python -m benchmarks.model_gpu --presets {' '.join(args.presets)} --batches "
        f"{' '.join(map(str, args.batches))} --runs {args.runs} --warmup {args.warmup}"
        f"{' --no-compile' if args.no_compile else ''}`; "
        f"torch {torch.__version__}; random weights; one forward pass (backbones, "
        "co-tokenization, first answer position) in FP16 autocast; CUDA events, "
        f"{args.runs} timed calls after {args.warmup} warm-up.",
        "",
        "| preset | batch | mode | TokenLearner | p50 ms | p90 ms | p99 ms | clips/s "
        "| x eager reference |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tl = "fused (Triton)" if r["fused"] else "reference"
        if "ms" not in r:
            lines.append(
                f"| {r['preset']} | {r.get('batch', '-')} | {r.get('mode', '-')} | "
                f"{tl} | {r.get('error', '?')} | | | | |"
            )
            continue
        ms = r["ms"]
        b = base.get((r["preset"], r["batch"]))
        speed = f"{b / ms['p50']:.2f}" if b else "-"
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['mode']} | {tl} | {ms['p50']:.3f} "
            f"| {ms['p90']:.3f} | {ms['p99']:.3f} | {r['clips_per_s']} | {speed} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["edge", "paper"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", type=Path, help="markdown table")
    p.add_argument("--json", type=Path, help="rows as JSON")
    args = p.parse_args(argv)
    if args.runs < 50:
        p.error("--runs: at least 50 timed calls")
    if not torch.cuda.is_available():
        print("benchmarks.model_gpu: no CUDA device (nothing was measured)", file=sys.stderr)
        return 2
    rows = measure(args)
    text = render(rows, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
