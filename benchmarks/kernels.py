"""Fused TokenLearner on a GPU: parity with the reference, then timings, as a markdown table.

Run on a CUDA machine (one prepared script for a GPU session)::

    python benchmarks/kernels.py [--out kernels.md] [--cuda-lib libcotok_tokenlearner.so]

For every shape below, in FP32 and FP16, at batch 1 and 8:
  parity  Triton and the CUDA C++ kernel (via ctypes; built here with nvcc
          unless --cuda-lib is given) against the FP32 reference;
  time    the reference in eager PyTorch, the reference under torch.compile,
          Triton and CUDA (CUDA events, median of --iters after warm-up);
  traffic the least bytes the op must move (x, cond_bias, weights, z) over the
          time, and that as a percent of the card's peak memory bandwidth.
Targets (printed as PASS/FAIL): fused >= 2x faster than eager at batch 8, and
>= 60% of peak bandwidth at the largest shape. Without CUDA it exits with
status 2 and says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

# Shapes: N positions per stream = T x H x W of its backbone's output, C = d.
# (name, preset, stream, N, C, S). Correct these when the model's grids change.
SHAPES = [
    ("paper-s1", "paper", "32x8x8", 2048, 512, 8),
    ("paper-s2", "paper", "16x14x14", 3136, 512, 8),
    ("paper-s3", "paper", "8x14x14", 1568, 512, 8),
    ("edge-s1", "edge", "32x8x8", 2048, 256, 8),
    ("edge-s2", "edge", "16x14x14", 3136, 256, 8),
    ("edge-s3", "edge", "8x14x14", 1568, 256, 8),
]
BATCHES = (1, 8)
DTYPES = (torch.float32, torch.float16)
HIDDEN = 64

# Peak DRAM bandwidth in GB/s by device-name fragment (vendor figures); the
# first match wins. Otherwise a measured device-to-device copy stands in.
PEAK_GBPS = [
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100-PCIE-80GB", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("A10", 600.0),
    ("Orin", 204.8),  # Jetson AGX Orin; Orin NX 102.4, Orin Nano 68
]

PARITY_TOL = {torch.float32: 1e-4, torch.float16: 2e-2}  # max |z - z_ref| / max |z_ref|


@dataclass
class Row:
    shape: str
    dtype: str
    batch: int
    ms: dict
    err: dict
    bytes_moved: int


def _fail(msg: str) -> None:
    print(f"benchmarks/kernels.py: {msg}", file=sys.stderr)
    sys.exit(2)


def make_inputs(B: int, N: int, C: int, S: int, dtype: torch.dtype, seed: int = 0):
    from cotok_edge.kernels.reference import TokenLearnerWeights

    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dtype)

    x = randn(B, N, C)
    cb = randn(B, C, scale=0.5)
    w = TokenLearnerWeights(
        1.0 + randn(C, scale=0.1), randn(C, scale=0.1), randn(HIDDEN, C, scale=C**-0.5),
        randn(HIDDEN, scale=0.1), randn(S, HIDDEN, scale=HIDDEN**-0.5), randn(S, scale=0.1),
    )  # fmt: skip
    return x, cb, w


def cuda_event_times(fn, iters: int, warmup: int = 5) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``fn()`` (CUDA events), after ``warmup``."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def time_ms(fn, iters: int, warmup: int = 5) -> float:
    return statistics.median(cuda_event_times(fn, iters, warmup))


def peak_gbps(override: float | None) -> tuple[float, str]:
    if override:
        return override, "given"
    name = torch.cuda.get_device_name()
    for fragment, gbps in PEAK_GBPS:
        if fragment in name:
            return gbps, f"spec ({fragment})"
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), 20)
    return 2 * src.numel() / ms / 1e6, "measured copy"


def rel_err(z: torch.Tensor, ref: torch.Tensor) -> float:
    return ((z.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def render(rows: list[Row], notes: list[str], peak: float, peak_src: str, iters: int,
           done: bool = True) -> tuple[str, list[str]]:  # fmt: skip
    """The markdown report of ``rows`` and the targets they miss."""
    kinds = [k for k in ("eager", "compile", "triton", "cuda") if any(k in r.ms for r in rows)]
    fused = [k for k in ("triton", "cuda") if k in kinds]
    lines = [
        f"# Fused TokenLearner on {torch.cuda.get_device_name()}",
        "",
        f"torch {torch.__version__}; peak bandwidth {peak:.0f} GB/s ({peak_src}); "
        f"median of {iters} runs; error = max|z - z_ref32| / max|z_ref32|.",
        "",
        "| shape | dtype | B | " + " | ".join(f"{k} ms" for k in kinds) + " | "
        + " | ".join(f"{k} err | {k} GB/s | {k} % peak | {k} x eager" for k in fused) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in kinds)
        + " | " + " | ".join("--- | --- | --- | ---" for _ in fused) + " |",
    ]  # fmt: skip
    failures = []
    largest = max(rows, key=lambda r: r.bytes_moved)
    for r in rows:
        cells = [f"{r.ms[k]:.4f}" if k in r.ms else "-" for k in kinds]
        for k in fused:
            if k not in r.ms:
                cells += ["-"] * 4
                continue
            gbps = r.bytes_moved / r.ms[k] / 1e6
            speedup = r.ms["eager"] / r.ms[k]
            cells += [
                f"{r.err[k]:.1e}",
                f"{gbps:.0f}",
                f"{100 * gbps / peak:.0f}",
                f"{speedup:.2f}",
            ]
            tol = PARITY_TOL[getattr(torch, r.dtype)]
            if r.err[k] > tol:
                failures.append(
                    f"{k} parity {r.shape} {r.dtype} B={r.batch}: {r.err[k]:.1e} > {tol}"
                )
            if r.batch == 8 and speedup < 2.0:
                failures.append(f"{k} speed {r.shape} {r.dtype} B=8: {speedup:.2f}x < 2x eager")
            if r is largest and 100 * gbps / peak < 60:
                failures.append(f"{k} bandwidth {r.shape} {r.dtype} B={r.batch}: < 60% of peak")
        lines.append(f"| {r.shape} | {r.dtype} | {r.batch} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- note: {n}" for n in notes]
    lines += [f"- FAIL: {f}" for f in failures] or ["- PASS: parity, 2x eager at B=8, 60% peak"]
    if not done:
        lines.append("- note: partial table (the run was still going when this was written)")
    return "\n".join(lines) + "\n", failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--cuda-lib", type=Path, help="prebuilt libcotok_tokenlearner.so")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--peak-gbps", type=float, help="peak memory bandwidth, GB/s")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        _fail("no CUDA device: this benchmark needs a GPU (nothing was measured)")
    try:
        import cotok_edge.kernels  # noqa: F401  (kernels/ installs under this name only)
    except ImportError:
        _fail("cotok_edge.kernels is not importable: run `pip install -e .` in the repo first")

    from cotok_edge.kernels import cuda_tokenlearner as cuk
    from cotok_edge.kernels.reference import TokenLearnerWeights, tokenlearner_reference
    from cotok_edge.kernels.triton_tokenlearner import tokenlearner_triton, triton_available

    notes = []
    lib = None
    try:
        lib_path = args.cuda_lib
        if lib_path is None:
            major, minor = torch.cuda.get_device_capability()
            lib_path = cuk.build_library(tempfile.mkdtemp(), archs=(major * 10 + minor,))
        lib = cuk.load_library(lib_path)
    except (RuntimeError, OSError) as e:
        notes.append(f"CUDA C++ kernel not run: {e}".splitlines()[0])
    if not triton_available():
        notes.append("Triton not installed: Triton kernel not run")

    def reference(x, cb, w):
        return tokenlearner_reference(x, cb, w)[0]

    compiled = None
    if not args.no_compile:
        compiled = torch.compile(reference, dynamic=False)

    peak, peak_src = peak_gbps(args.peak_gbps)
    rows: list[Row] = []
    for name, _preset, _grid, N, C, S in SHAPES:
        for dtype in DTYPES:
            for B in BATCHES:
                x, cb, w = make_inputs(B, N, C, S, dtype)
                w32 = TokenLearnerWeights(*(t.float() for t in w))
                with torch.no_grad():
                    ref32 = reference(x.float(), cb.float(), w32)
                    impls = {"eager": lambda x=x, cb=cb, w=w: reference(x, cb, w)}
                    if compiled is not None:
                        impls["compile"] = lambda x=x, cb=cb, w=w: compiled(x, cb, w)
                    if triton_available():
                        impls["triton"] = lambda x=x, cb=cb, w=w: tokenlearner_triton(x, cb, w)
                    if lib is not None:
                        impls["cuda"] = lambda x=x, cb=cb, w=w: cuk.tokenlearner_cuda(lib, x, cb, w)
                    err, ms = {}, {}
                    for k, f in impls.items():
                        # One implementation refusing a shape (Triton out of shared memory,
                        # a compile error) costs its cells, not the rest of the table.
                        try:
                            err[k] = rel_err(f(), ref32)
                            ms[k] = time_ms(f, args.iters)
                        except Exception as e:  # noqa: BLE001
                            err.pop(k, None)
                            first = (str(e).splitlines() or [""])[0][:200]
                            notes.append(f"{k} {name} {dtype} B={B}: {type(e).__name__}: {first}")
                    if "eager" not in ms:
                        continue
                el = x.element_size()
                moved = (x.numel() + cb.numel() + sum(t.numel() for t in w) + B * S * C) * el
                rows.append(Row(name, str(dtype).removeprefix("torch."), B, ms, err, moved))
        if args.out and rows:  # a run stopped by its time limit still leaves its rows
            args.out.write_text(render(rows, notes, peak, peak_src, args.iters, done=False)[0])

    report, failures = render(rows, notes, peak, peak_src, args.iters)
    print(report)
    if args.out:
        args.out.write_text(report)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
