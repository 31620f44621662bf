"""The benchmark suite: FLOP budget, parity and latency, in one command.

    python -m benchmarks [--quick] [--out benchmarks/RESULTS.md] [--json results.json]
        [--checkpoint DIR] [--cache-dir DIR] [--work DIR] [--note TEXT]
    python -m benchmarks --render-only results.json [--out ...]   # re-render, measure nothing

Regenerates ``--out`` (markdown) and its PNG plots (next to it) from measurements made
now, on this machine, and ``--json`` (what ``python -m benchmarks.check`` gates):

1. FLOP budget of every preset and baseline, per component (:mod:`benchmarks.flops`);
   with the trained models of ``benchmarks/trained_models.json``, accuracy against GMACs;
2. parity: ``python -m cotok_edge.build --target cpu --precision int8`` of the checkpoint
   (torch FP32, ONNX Runtime FP32, INT8 PTQ and QAT on the synthetic test slice);
3. latency of the runtime per backend x precision x preset (:mod:`benchmarks.latency`,
   frames in memory, warm-up then >= 50 timed calls, percentiles), soak and threads;
4. the GPU tables: measured now when CUDA is here (``benchmarks/gpu.sh``'s scripts),
   otherwise the ones ``benchmarks/gpu.sh`` recorded under ``benchmarks/gpu/``.

``--quick`` (CI; a few minutes on 2 cores) builds with few calibration/test clips and
QAT steps, times only the checkpoint's preset and counts FLOPs on the meta device; the
report says so. The hand-written records (``benchmarks/records.md``) are appended.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records.md"
TRAINED = HERE / "trained_models.json"
GPU_DIR = HERE / "gpu"


@dataclass(frozen=True)
class Mode:
    """Sizes of one run of the suite."""

    name: str
    calib_clips: int
    test_clips: int
    qat_steps: int
    qat_clips: int
    runs: int
    warmup: int
    soak: int
    threads: int
    per_thread: int
    # Backends timed on the FP32 bundle of the checkpoint (ONNX Runtime INT8 always).
    fp32_backends: tuple[str, ...] = ("onnxruntime", "torch")
    # (preset, backends) timed at random weights besides the checkpoint.
    random_presets: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
    meta_flops: bool = False


QUICK = Mode(
    "quick",
    calib_clips=8,
    test_clips=8,
    qat_steps=2,
    qat_clips=2,
    runs=50,
    warmup=3,
    soak=60,
    threads=4,
    per_thread=5,
    fp32_backends=("onnxruntime",),
    meta_flops=True,
)
FULL = Mode(
    "full",
    calib_clips=512,
    test_clips=100,
    qat_steps=40,
    qat_clips=8,
    runs=100,
    warmup=10,
    soak=2000,
    threads=4,
    per_thread=100,
    random_presets=(("edge", ("onnxruntime", "torch")), ("paper", ("onnxruntime",))),
)


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# Machine and versions ------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU (if any) and load of this machine."""
    from cotok_edge.build.host import cpu_name

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "system": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
    }
    try:
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (OSError, ValueError, AttributeError):
        pass
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor})"
    return info


def versions() -> dict[str, str | None]:
    """Installed versions of the tools the figures depend on (None: not installed)."""
    out: dict[str, str | None] = {}
    for dist in (
        "cotok-edge",
        "torch",
        "onnx",
        "onnxruntime",
        "nvidia-modelopt",
        "triton",
        "tensorrt",
        "numpy",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


# 1. FLOP budget ------------------------------------------------------------------------
def flop_budget(meta: bool) -> dict[str, Any]:
    """Budget of every preset (``benchmarks.flops`` counting), per component and group."""
    import torch

    from benchmarks.flops import PAPER_FIGURES, TARGETS, _group
    from cotok_edge import CoTokConfig, CoTokVQA
    from cotok_edge.flops import model_budget
    from cotok_edge.model.config import PRESETS

    torch.manual_seed(0)
    presets: dict[str, Any] = {}
    for p in PRESETS:
        if meta:  # shapes only: the same counts, no arithmetic
            with torch.device("meta"):
                b = model_budget(CoTokVQA(CoTokConfig.preset(p)))
        else:
            b = model_budget(CoTokVQA(CoTokConfig.preset(p)))
        presets[p] = {
            "total_gmacs": b.total / 1e9,
            "total_gflops": 2 * b.total / 1e9,
            "groups_gmacs": _group(b),
            "components_gmacs": {k: v / 1e9 for k, v in b.components.items()},
        }
    return {
        "command": "python -m benchmarks.flops",
        "method": "counted on the meta device: shapes only, the same counts as on the CPU "
        "without the arithmetic"
        if meta
        else "counted running every component on the CPU",
        "convention": "GMACs = 1e9 multiply-adds (the papers' 'GFLOPs'); GFLOPs = 2 x GMACs; "
        "one clip, one 16-token question, 8 answer tokens, batch 1",
        "presets": presets,
        "targets_gmacs": {k: list(v) for k, v in TARGETS.items()},
        "paper_figures": {k: v[0] for k, v in PAPER_FIGURES.items()},
        "paper_ratios": {k: v[1] for k, v in PAPER_FIGURES.items()},
    }


def trained_models() -> list[dict[str, Any]]:
    if not TRAINED.is_file():
        return []
    return list(json.loads(TRAINED.read_text()))


# 2. Parity (the build) -------------------------------------------------------------------
def build_bundle(ckpt: Path | None, out: Path, cache: Path, mode: Mode) -> dict[str, Any]:
    """Run the INT8 CPU build; return its manifest's parity and sizes, and the command."""
    argv = [
        "--target",
        "cpu",
        "--precision",
        "int8",
        "--out",
        str(out),
        "--force",
        "--quiet",
        "--calib-clips",
        str(mode.calib_clips),
        "--test-clips",
        str(mode.test_clips),
        "--qat-steps",
        str(mode.qat_steps),
        "--qat-clips",
        str(mode.qat_clips),
        "--cache-dir",
        str(cache),
    ]
    if ckpt is not None:
        argv += ["--checkpoint", str(ckpt)]
    cmd = [sys.executable, "-m", "cotok_edge.build", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    shown = "python -m cotok_edge.build " + " ".join(argv)
    result: dict[str, Any] = {
        "command": shown,
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
    }
    if proc.returncode not in (0, 1) or not (out / "manifest.json").is_file():
        result["error"] = (proc.stderr or proc.stdout)[-2000:]
        return result
    from cotok_edge.bundle import read_manifest

    m = read_manifest(out)
    parity = m.parity or {}
    result.update(
        rows=parity["rows"],
        bars=parity["bars"],
        slice=parity["slice"],
        quantization={k: v for k, v in (m.quantization or {}).items() if k != "quantizers"},
        build_seconds={k: round(v, 1) for k, v in (m.build_seconds or {}).items()},
        engine_status=m.engine_status,
        model=m.model_config.get("name"),
        budget_gmacs=(m.budget_macs or {}).get("total", 0) / 1e9,
        sizes=_sizes(out),
    )
    return result


def _sizes(bundle: Path) -> dict[str, int]:
    return {
        str(p.relative_to(bundle)): p.stat().st_size
        for p in sorted(bundle.rglob("*"))
        if p.is_file()
    }


def fp32_bundle(ckpt: Path | None, out: Path) -> dict[str, Any]:
    """A plain FP32 bundle of the checkpoint (``write_dev_bundle``) for ONNX Runtime FP32."""
    from cotok_edge.model.vqa import DEFAULT_CHECKPOINT, CoTokVQA
    from cotok_edge.runtime.devbundle import write_dev_bundle

    src = ckpt or DEFAULT_CHECKPOINT
    write_dev_bundle(
        CoTokVQA.from_pretrained(src).eval(), out, src / "tokenizer.json", explain=False
    )
    return {"sizes": _sizes(out)}


# 3. Latency ------------------------------------------------------------------------------
def latency(source: list[str], backend: str, mode: Mode, extra: bool) -> dict[str, Any]:
    """``python -m benchmarks.latency`` in a fresh process; its JSON plus the command."""
    with tempfile.TemporaryDirectory(prefix="cotok-lat-") as tmp:
        j = Path(tmp) / "lat.json"
        argv = [
            *source,
            "--backend",
            backend,
            "--runs",
            str(mode.runs),
            "--warmup",
            str(mode.warmup),
        ]
        if extra:
            argv += [
                "--soak",
                str(mode.soak),
                "--threads",
                str(mode.threads),
                "--per-thread",
                str(mode.per_thread),
            ]
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.latency", *argv, "--json", str(j)],
            capture_output=True,
            text=True,
        )
        shown = "python -m benchmarks.latency " + " ".join(argv)
        if proc.returncode != 0 or not j.is_file():
            return {"command": shown, "error": (proc.stderr or proc.stdout)[-2000:]}
        r = json.loads(j.read_text())
    r["command"] = shown
    return r


def latency_row(r: dict[str, Any], preset: str, precision: str, weights: str) -> dict[str, Any]:
    row = {"preset": preset, "precision": precision, "weights": weights, **r}
    if "single" in r:
        s = r["single"]
        tot = s["total"]["p50"]
        row["clips_per_s"] = round(1000.0 / tot, 2) if tot > 0 else None
        pre_post = s["preprocess"]["p50"] + s["postprocess"]["p50"] + s["decode"]["p50"]
        row["pre_post_share"] = round(pre_post / tot, 4) if tot > 0 else None
    return row


# 4. GPU ------------------------------------------------------------------------------------
def gpu_tables(here_cuda: bool, out_dir: Path) -> dict[str, Any]:
    """Run the GPU scripts when CUDA is here; otherwise pick up ``benchmarks/gpu/``."""
    if here_cuda:
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GPU_OUT": str(out_dir)}
        proc = subprocess.run(
            ["bash", str(HERE / "gpu.sh")], env=env, capture_output=True, text=True
        )
        src, origin = out_dir, "measured now, on this machine (bash benchmarks/gpu.sh)"
        if proc.returncode != 0:
            origin += f"; gpu.sh exited {proc.returncode}: {proc.stderr[-500:]}"
    else:
        src = GPU_DIR
        origin = "recorded on a GPU machine, not this one (each table names its command and card)"
    tables = {}
    for name in ("kernels.md", "model.md"):
        f = src / name
        if f.is_file():
            tables[name] = f.read_text()
    return {"origin": origin if tables else None, "tables": tables}


# The run ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    import torch

    results: dict[str, Any] = {
        "mode": mode.name,
        "command": "python -m benchmarks" + (" --quick" if args.quick else ""),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "checkpoint": str(args.checkpoint)
        if args.checkpoint
        else "the shipped model (cotok_edge/assets/default)",
        "sizes": {k: v for k, v in mode.__dict__.items() if k != "name"},
    }
    t_all = time.perf_counter()
    log(f"{mode.name} mode; FLOP budget")
    results["flops"] = flop_budget(mode.meta_flops)
    results["trained_models"] = trained_models()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cotok-bench-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    try:
        log(
            f"parity: INT8 build ({mode.calib_clips} calibration clips, {mode.test_clips} "
            f"test clips, {mode.qat_steps} QAT steps)"
        )
        int8 = work / "bundle-int8"
        results["parity"] = build_bundle(args.checkpoint, int8, cache, mode)
        log(f"build exited {results['parity']['exit_code']}; FP32 bundle for ONNX Runtime")
        fp32 = work / "bundle-fp32"
        if fp32.exists():
            shutil.rmtree(fp32)
        try:
            results["fp32_bundle"] = fp32_bundle(args.checkpoint, fp32)
        except (OSError, ValueError, RuntimeError) as e:
            results["fp32_bundle"] = {"error": f"{type(e).__name__}: {e}"}
        preset = results["parity"].get("model") or "checkpoint"

        rows: list[dict[str, Any]] = []
        plan: list[tuple[list[str], str, str, str, bool]] = []
        if (int8 / "manifest.json").is_file():
            plan.append((["--bundle", str(int8)], "onnxruntime", "int8 (QAT)", "checkpoint", True))
        if (fp32 / "manifest.json").is_file():
            for b in mode.fp32_backends:
                plan.append((["--bundle", str(fp32)], b, "fp32", "checkpoint", False))
        for p, backends in mode.random_presets:
            for b in backends:
                plan.append((["--preset", p], b, "fp32", "random", False))
        for source, backend, precision, weights, extra in plan:
            name = source[1] if source[0] == "--preset" else preset
            log(f"latency: {name} {backend} {precision}")
            r = latency(source, backend, mode, extra)
            r.setdefault("backend", backend)
            if source[0] == "--bundle":
                r["bundle"] = f"<{precision} bundle of the checkpoint>"
            rows.append(latency_row(r, name, precision, weights))
        results["latency"] = {
            "rows": rows,
            "frames": "in memory: a synthetic 32-frame 224x224 clip (decode = 0)",
        }
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    results["gpu"] = gpu_tables(torch.cuda.is_available(), Path(args.out).parent / "gpu")
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    return results


def errors_of(results: dict[str, Any]) -> list[str]:
    """Measurements that failed to run (the suite then exits 1: a crash is not a figure)."""

    def last(msg: str) -> str:
        return (msg.strip().splitlines() or ["?"])[-1]

    out = []
    for key in ("parity", "fp32_bundle"):
        if "error" in (results.get(key) or {}):
            out.append(f"{key}: {last(results[key]['error'])}")
    for r in (results.get("latency") or {}).get("rows", []):
        if "error" in r:
            out.append(f"latency `{r['command']}`: {last(r['error'])}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI; a few minutes)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown report")
    p.add_argument("--json", help="also write the results here (for benchmarks.check)")
    p.add_argument("--checkpoint", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--cache-dir", help="synthetic clip cache (default: a temporary one)")
    p.add_argument("--work", help="keep the bundles here (default: a temporary folder)")
    p.add_argument("--note", help="a line for the report's header (e.g. what the checkpoint is)")
    p.add_argument(
        "--render-only",
        type=Path,
        metavar="JSON",
        help="measure nothing: render --out (plots, bars) again from a results JSON",
    )
    args = p.parse_args(argv)
    if args.checkpoint is not None and not (args.checkpoint / "config.json").is_file():
        p.error(f"--checkpoint {args.checkpoint}: no config.json")

    from benchmarks import check, plots, report

    if args.render_only:
        results = json.loads(args.render_only.read_text())
    else:
        results = run(args)
    if args.note:
        results["note"] = args.note
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log("plots and report")
    results["plots"] = plots.write_all(results, out.parent)
    results["check"] = [b.to_dict() for b in check.evaluate(results)]
    records = RECORDS.read_text() if RECORDS.is_file() else ""
    out.write_text(report.render(results, records))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    errors = errors_of(results)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    log(
        f"wrote {out}"
        + (f" and {args.json}" if args.json else "")
        + f" in {results['seconds']:.0f} s"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
