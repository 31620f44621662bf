"""End-to-end latency of the embedded runtime, per stage, plus a memory soak and threads.

    python -m benchmarks.latency --bundle DIR [--backend auto] [--runs 50] [--warmup 5]
        [--soak N] [--threads 4 --per-thread 100] [--json out.json]
    python -m benchmarks.latency --preset edge ...     # a temporary FP32 bundle of the
                                                       # edge preset at random weights

What it measures (frames already in memory: a synthetic 32-frame 224x224 clip, so
``decode`` is 0 and ``preprocess`` includes the stream sampling/resizing):

- ``single``: p50/p90/p99 of each stage (``preprocess``, ``inference``,
  ``postprocess``, ``total``) for one question per call, after ``--warmup`` calls;
- ``batch4``: the same with 4 questions per call (one video encoder run, one decoder
  batch), and ``ratio_4_to_1`` = p50 total of 4 questions / p50 total of 1;
- ``soak`` (``--soak N``): N more answers; resident memory (``/proc/self/statm``,
  else ``ru_maxrss``) after the warm-up and at the end, and the growth;
- ``threads`` (``--threads T --per-thread M``): T threads each answering M questions,
  compared with the serial answers (``identical``) and the throughput.

Numbers depend on the machine and its load: report the machine with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc/self/statm``), else the peak (``ru_maxrss``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)}


def stage_stats(answers: list[Any]) -> dict[str, dict[str, float]]:
    stages = answers[0].timings_ms.keys()
    return {s: percentiles([a.timings_ms[s] for a in answers]) for s in stages}


def clip_and_questions() -> tuple[np.ndarray, list[str]]:
    from cotok_edge.data import synthetic as syn

    spec = syn.make_clip_spec(np.random.default_rng([2024, 0]))
    return syn.draw_clip(spec), [q for _, q, _ in syn.clip_questions(spec)]


def preset_bundle(preset: str, out: Path, seed: int = 0) -> Path:
    """A temporary FP32 bundle of ``preset`` at random weights (imports torch)."""
    import torch

    from cotok_edge.model import CoTokConfig, CoTokVQA
    from cotok_edge.runtime.devbundle import write_dev_bundle

    torch.manual_seed(seed)
    model = CoTokVQA(CoTokConfig.preset(preset)).eval()
    write_dev_bundle(model, out)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cotok_edge.runtime import load

    tmp = None
    bundle = args.bundle
    if args.preset:
        tmp = tempfile.TemporaryDirectory(prefix=f"cotok-{args.preset}-bundle-")
        t0 = time.perf_counter()
        bundle = preset_bundle(args.preset, Path(tmp.name) / "bundle")
        print(f"built {args.preset} bundle in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    try:
        qa = load(
            bundle, backend=args.backend, threads=args.ort_threads, spin=args.ort_spin,
            verbose=True,
        )  # fmt: skip
        frames, questions = clip_and_questions()
        q1, q4 = questions[0], questions[:4]
        for _ in range(args.warmup):
            qa.answer(frames, q1)
            qa.answer(frames, q4)
        single = [qa.answer(frames, q1) for _ in range(args.runs)]
        batch4 = [qa.answer(frames, q4)[0] for _ in range(args.runs)]
        s1, s4 = stage_stats(single), stage_stats(batch4)
        result: dict[str, Any] = {
            "bundle": str(bundle) if not args.preset else f"<{args.preset}, random weights>",
            "backend": qa.backend,
            "backend_note": qa.backend_note,
            "ort_spin": bool(args.ort_spin),
            "machine": f"{platform.machine()} {platform.processor() or ''} "
            f"{os.cpu_count()} cpus".strip(),
            "runs": args.runs,
            "warmup": args.warmup,
            "single": s1,
            "batch4": s4,
            "ratio_4_to_1": round(s4["total"]["p50"] / s1["total"]["p50"], 3),
        }
        if args.soak:
            before = rss_bytes()
            t0 = time.perf_counter()
            for i in range(args.soak):
                qa.answer(frames, questions[i % len(questions)])
            after = rss_bytes()
            result["soak"] = {
                "answers": args.soak,
                "seconds": round(time.perf_counter() - t0, 2),
                "rss_after_warmup_mib": round(before / 2**20, 2),
                "rss_end_mib": round(after / 2**20, 2),
                "rss_growth_mib": round((after - before) / 2**20, 2),
            }
        if args.threads:
            # The same call the threads make (one question per call): a batch of 4 may
            # legitimately differ in the last bits (other GEMM shapes) from 4 single calls.
            serial = [
                (a.text, round(a.score, 5)) for a in (qa.answer(frames, q) for q in questions)
            ]
            mismatches: list[str] = []
            lock = threading.Lock()

            def work(t: int) -> None:
                for i in range(args.per_thread):
                    k = (i + t) % len(questions)
                    a = qa.answer(frames, questions[k])
                    if (a.text, round(a.score, 5)) != serial[k]:
                        with lock:
                            mismatches.append(f"thread {t} answer {i}: {a.text!r}")

            t0 = time.perf_counter()
            ts = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            secs = time.perf_counter() - t0
            n = args.threads * args.per_thread
            result["threads"] = {
                "threads": args.threads,
                "answers": n,
                "seconds": round(secs, 2),
                "answers_per_s": round(n / secs, 2),
                "identical": not mismatches,
                "mismatches": mismatches[:10],
            }
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _table(r: dict[str, Any]) -> str:
    lines = [
        f"backend: {r['backend_note']}",
        f"bundle: {r['bundle']}; {r['runs']} runs after {r['warmup']} warm-up; {r['machine']}",
        "",
        "| questions/call | stage | p50 ms | p90 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (("single", "1"), ("batch4", "4")):
        for stage, p in r[key].items():
            lines.append(f"| {label} | {stage} | {p['p50']} | {p['p90']} | {p['p99']} |")
    lines.append(f"\n4 questions / 1 question (p50 total): {r['ratio_4_to_1']}")
    if "soak" in r:
        s = r["soak"]
        lines.append(
            f"soak: {s['answers']} answers in {s['seconds']} s, RSS {s['rss_after_warmup_mib']}"
            f" -> {s['rss_end_mib']} MiB (growth {s['rss_growth_mib']} MiB)"
        )
    if "threads" in r:
        t = r["threads"]
        lines.append(
            f"threads: {t['threads']} x {t['answers'] // t['threads']} answers in {t['seconds']}"
            f" s ({t['answers_per_s']}/s), identical to serial: {t['identical']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="bundle folder")
    src.add_argument("--preset", choices=("edge", "tiny", "paper"), help="random-weight bundle")
    p.add_argument("--backend", default="auto")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--soak", type=int, default=0, help="answers in the memory soak")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--per-thread", type=int, default=100)
    p.add_argument("--ort-threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument(
        "--ort-spin", action="store_true", help="let onnxruntime's idle threads busy-wait"
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    result = run(args)
    print(_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
