"""Seconds per training step (forward, backward, AdamW update) on this machine.

    python -m benchmarks.train_step --preset tiny --batch 8

Random uint8 clips and token ids of the real shapes (the speed does not depend
on the values); 2 warm-up steps, then the median and spread of ``--steps``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from tqdm import tqdm

from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.model.config import PRESETS


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--answer-len", type=int, default=4)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset(args.preset)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = model.example_inputs(args.batch)
    vocab = model.config.text.vocab_size
    inputs["answer_ids"] = torch.randint(3, vocab, (args.batch, args.answer_len))
    times = []
    for i in tqdm(range(args.steps + 2), desc=f"{args.preset} train steps", leave=False):
        t0 = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print("| preset | batch | steps timed | median s/step | min | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| {args.preset} | {args.batch} | {len(times)} | {statistics.median(times):.2f} | "
        f"{min(times):.2f} | {max(times):.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
