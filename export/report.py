"""A bundle's ``report.md`` and ``finish_on_device.sh``, both from its manifest."""

from __future__ import annotations

from cotok_edge.contract import PLUGIN_LIBRARY_FILE, engine_file
from cotok_edge.manifest import Manifest
from cotok_edge.runtime.backends.tensorrt.build import (
    bundle_engine_plans,
    trtexec_argv,
    trtexec_command,
)

from .targets import get_target


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_report(manifest: Manifest) -> str:
    """Markdown: FLOP budget, parity per backend and precision, quantization, build time."""
    host = manifest.host or {}
    lines = [
        f"# cotok-edge bundle: {manifest.target}, {manifest.precision}",
        "",
        f"Built {manifest.created} with `{manifest.command}`",
        f"on {host.get('cpu')} ({host.get('cores')} cores).",
        "",
        "## FLOP budget (one clip, one question, an 8-token answer; batch 1)",
        "",
        "| component | GMACs |",
        "| --- | ---: |",
    ]
    budget = manifest.budget_macs or {"total": 0.0}
    for name, macs in budget.items():
        if name != "total":
            lines.append(f"| {name} | {macs / 1e9:.3f} |")
    total = budget["total"]
    lines += [
        f"| **total** | **{total / 1e9:.3f}** ({2 * total / 1e9:.2f} GFLOPs; the paper's "
        "model: 67 GFLOPs) |",
        "",
    ]
    par = manifest.parity or {}
    sl = par["slice"]
    lines += [
        "## Parity",
        "",
        f"{sl['questions']} questions on {sl['clips']} clips ({sl['format']} `{sl['data']}`, "
        f"split {sl['split']}). Agreement and logit errors are against PyTorch FP32 "
        "(`answer_logits`, the logits each greedy step chose from).",
        "",
        "| backend, precision | accuracy | agreement | max logit err | mean logit err |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in par["rows"].items():
        lines.append(
            f"| {name} | {_pct(r['accuracy'])} | {_pct(r['agreement'])} | "
            f"{r['max_logit_error']:.2e} | {r['mean_logit_error']:.2e} |"
        )
    cats = next(iter(par["rows"].values())).get("per_category") or {}
    if cats:
        lines += ["", "Accuracy per category:", ""]
        ids = sorted(cats, key=str)
        lines.append("| backend, precision | " + " | ".join(str(c) for c in ids) + " |")
        lines.append("| --- |" + " ---: |" * len(ids))
        for name, r in par["rows"].items():
            per = r.get("per_category", {})
            cells = [_pct(per[c]["accuracy"]) if c in per else "-" for c in ids]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| bar | value | required | |", "| --- | ---: | --- | --- |"]
    for name, b in par["bars"].items():
        lines.append(
            f"| {name} | {b['value']:.4g} | {b['bar']} | {'ok' if b['passed'] else 'MISSED'} |"
        )
    q = manifest.quantization
    if q:
        lines += [
            "",
            "## INT8 (NVIDIA ModelOpt)",
            "",
            f"- calibration: max, on {q['calibration_clips']} clips; shipped: {q['shipped']}",
            f"- QAT: {q['qat_steps']} steps, lr {q['qat_lr']:g}, {q['qat_clips_per_step']} clips "
            f"per step; loss first/last: {q['qat_loss_first_last']}",
            f"- quantizers: {q['quantizers']}; kept in floating point: "
            + ", ".join(f"`{p}`" for p in q["kept_float"]),
        ]
    engine, status = manifest.engine, manifest.engine_status or {}
    lines += ["", "## TensorRT", ""]
    if engine is not None:
        cc = ".".join(str(x) for x in engine.compute_capability or ()) or "unknown"
        lines.append(
            f"Engines built here ({engine.describe()}): TensorRT {engine.tensorrt}, "
            f"{engine.gpu} (compute capability {cc})."
        )
    elif (manifest.target_info or {}).get("tensorrt"):
        lines.append(f"No engine built on this host: {status.get('reason', 'unknown')}.")
        lines.append("On the device: `bash finish_on_device.sh` (see the script).")
    else:
        lines.append("Not a TensorRT target: ONNX Runtime runs the graphs.")
    lines += ["", "## Build time (seconds)", "", "| step | s |", "| --- | ---: |"]
    for name, s in (manifest.build_seconds or {}).items():
        lines.append(f"| {name} | {s:.1f} |")
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in manifest.versions.items()]
    if manifest.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in manifest.warnings]
    return "\n".join(lines) + "\n"


def device_script(manifest: Manifest) -> str:
    """``finish_on_device.sh``: build the plugin, then both engines, then verify answers.

    The engines are built by ``python -m cotok_edge.build --finish`` (the TensorRT Python
    API, :func:`cotok_edge.runtime.backends.tensorrt.build.build_engine`), which also
    records them and their sha256 in the manifest; the equivalent ``trtexec`` lines are in
    the script as comments, for a device without the Python bindings.
    """
    t = get_target(manifest.target)
    version = "10.3" if t.is_jetson else "10.9"
    plugin = manifest.plugin
    arch = "87" if t.is_jetson else "native"
    lines = [
        "#!/usr/bin/env bash",
        f"# Finish this bundle on the {t.name} device ({t.description}):",
        "# build the fused-TokenLearner plugin and the two TensorRT engines, then check",
        "# that the engines answer the parity slice as the ONNX graphs did at build time.",
        "# Engines are not portable: run this on the device that will answer.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    if plugin:
        lines += [
            'build="$(mktemp -d)"',
            f'cmake -S plugins -B "$build" -DCMAKE_CUDA_ARCHITECTURES={arch} '
            '-DTENSORRT_ROOT="${TENSORRT_ROOT:-/usr}"',
            'cmake --build "$build" -j"$(nproc)"',
            f'cp "$build/{PLUGIN_LIBRARY_FILE}" {plugin.library}',
        ]
    lines += ["python -m cotok_edge.build --finish .", "", "# The same engines with trtexec:"]
    if not t.is_jetson:
        lines.append("# (TensorRT 11.x is strongly typed: drop --fp16/--int8.)")
    plans = bundle_engine_plans(manifest, version, plugin.library if plugin else None)
    for graph, (source, plan) in plans.items():
        argv = trtexec_argv(source, engine_file(graph), plan)
        lines.append(f"# {trtexec_command(argv)}")
    return "\n".join(lines) + "\n"


__all__ = ["device_script", "render_report"]
