"""Seconds per training step (forward, backward, AdamW update) on this machine.

    python -m benchmarks.train_step --preset tiny --clips 8 --questions 4 [--profile]

A step is what ``python -m cotok_edge.train`` runs (bf16 autocast where it would
use it, ``--bf16``): ``--clips`` clips, each with ``--questions`` questions (the
backbones run once per clip, the question-dependent part once per question).
Random uint8 clips and token ids of the real shapes (the speed does not depend on
the values); 2 warm-up steps, then the median and spread of ``--steps``.

``--profile`` adds a table of where the time goes: forward and backward of each
component (each stream's backbone, the question encoder, the K co-tokenization
steps with their TokenLearners, the answer decoder), timed one at a time with
the model's own training-mode modules, plus the ops torch.profiler ranks first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.build.host import cpu_name
from cotok_edge.model.config import PRESETS
from cotok_edge.model.cotokenizer import CoTokState
from cotok_edge.train import use_bf16


def step_inputs(model: CoTokVQA, clips: int, questions: int, answer_len: int) -> dict:
    """Kwargs of one training step: ``clips`` clips, ``questions`` questions each."""
    batch = clips * questions
    inputs = model.example_inputs(batch)
    for name in model.stream_names:
        inputs[name] = inputs[name][:clips]
    vocab = model.config.text.vocab_size
    inputs["answer_ids"] = torch.randint(3, vocab, (batch, answer_len))
    inputs["clip_index"] = torch.arange(clips).repeat_interleave(questions)
    return inputs


def _median_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_components(model: CoTokVQA, inputs: dict, repeats: int = 3) -> list[tuple]:
    """``(component, forward s, forward+backward s)`` for each part of one step.

    Each part runs on the detached outputs of the parts before it, so its backward
    stops at its own inputs.
    """
    streams = {n: inputs[n] for n in model.stream_names}
    q_ids, q_mask = inputs["question_ids"], inputs["question_mask"]
    clip_index = inputs["clip_index"]
    with torch.no_grad():
        video = model.encode_video(streams)  # one row per clip
        q = model.encode_question(q_ids, q_mask)
        words = model.question_words(q_ids)
        state, _ = model.cotokenizer(video, q, q_mask.bool(), clip_index=clip_index, words=words)
    video = {k: v.detach().requires_grad_() for k, v in video.items()}

    def cotokenize() -> CoTokState:
        return model.cotokenizer(video, q, q_mask.bool(), clip_index=clip_index, words=words)[0]

    parts: list[tuple[str, Callable[[], torch.Tensor]]] = []
    for name in model.stream_names:
        x = model.normalize(streams[name])
        shape = "x".join(map(str, x.shape[2:]))
        parts.append((f"backbone {name} ({shape})", lambda x=x, n=name: model.backbones[n](x)))
    parts += [
        ("question encoder", lambda: model.encode_question(q_ids, q_mask)),
        (
            f"co-tokenization (K={model.config.steps})",
            lambda: cotokenize().tokens,
        ),
        ("answer decoder", lambda: model.answer_logits(inputs["answer_ids"], state)),
    ]

    out = []
    for label, run in tqdm(parts, desc="components", leave=False):

        def fwd(run: Callable[[], torch.Tensor] = run) -> None:
            with torch.no_grad():
                run()

        def fwd_bwd(run: Callable[[], torch.Tensor] = run) -> None:
            run().float().square().mean().backward()

        out.append((label, _median_seconds(fwd, repeats), _median_seconds(fwd_bwd, repeats)))
        model.zero_grad(set_to_none=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--questions", type=int, default=4, help="questions per clip")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--answer-len", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="time each component too")
    parser.add_argument(
        "--freeze-backbones", action="store_true",
        help="time a step with every backbone fixed (`cotok_edge.train --freeze-backbone all`)",
    )  # fmt: skip
    parser.add_argument("--top-ops", type=int, default=12, help="ops listed by --profile")
    parser.add_argument(
        "--config", type=Path,
        help="time this model configuration (a config.json, e.g. a checkpoint's) instead "
        "of --preset",
    )  # fmt: skip
    parser.add_argument(
        "--bf16", choices=("auto", "on", "off"), default="auto",
        help="bf16 autocast, decided as `cotok_edge.train --bf16` decides it (auto: off "
        "on a CPU)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    bf16 = use_bf16(args.bf16, torch.device("cpu"))

    if args.config is not None:
        try:
            cfg = CoTokConfig.from_json(args.config)
        except (OSError, ValueError) as e:
            parser.error(f"--config {args.config}: {e}")
        args.preset = f"{cfg.name} ({args.config})"
    else:
        cfg = CoTokConfig.preset(args.preset)
    torch.manual_seed(0)
    model = CoTokVQA(cfg).train()
    if args.freeze_backbones:
        model.freeze_backbones(model.stream_names)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs = step_inputs(model, args.clips, args.questions, args.answer_len)

    def train_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in tqdm(range(args.steps + 2), desc=f"{args.preset} train steps", leave=False):
        t0 = time.perf_counter()
        train_step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
        + (", bf16 autocast" if bf16 else ", fp32")
    )
    print("| preset | clips x questions | steps timed | median s/step | min | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| {args.preset} | {args.clips} x {args.questions} | {len(times)} | "
        f"{statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |"
    )
    if args.profile:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rows = profile_components(model, inputs)
        total = sum(r[2] for r in rows)
        print("\n| component | forward s | forward+backward s | share of fwd+bwd |")
        print("|---|---:|---:|---:|")
        for label, f, fb in rows:
            print(f"| {label} | {f:.3f} | {fb:.3f} | {100 * fb / total:.0f}% |")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step()
        print()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top_ops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
