"""The on-device finish and ``--verify``: torch-free, for the device that will answer.

    python -m cotok_edge.build --finish BUNDLE                 (what finish_on_device.sh runs)
    python -m cotok_edge.build --verify BUNDLE [--backend B]

``--finish`` builds both TensorRT engines from the bundle's ONNX graphs with TensorRT's
Python API (:func:`cotok_edge.runtime.backends.tensorrt.build.build_bundle_engines`,
shapes and precision from the manifest), records them and their sha256 in the manifest,
then verifies them: the runtime's TensorRT backend answers the parity slice, which must
agree with ``parity/answers.json`` (the deployed graphs' answers at build time).

Nothing here imports torch, ModelOpt or the ONNX exporter: a Jetson needs TensorRT,
numpy and this package's runtime (``tests/test_build.py`` imports this path with torch
blocked).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from cotok_edge.bundle import BundleError, read_manifest, write_manifest
from cotok_edge.contract import PLUGIN_LIBRARY_FILE, engine_file
from cotok_edge.manifest import Manifest
from cotok_edge.runtime.backends.tensorrt.build import (
    bundle_engine_plans,
    polygraphy_argv,
    trtexec_argv,
    trtexec_command,
)

from .log import Log
from .parity import ANSWERS, VERIFY_AGREEMENT, default_cache_root, synthetic_subset

__all__ = ["device_script", "finish", "polygraphy_lines", "verify"]


def trt_version_for(target: Any) -> str:
    """The TensorRT version a target's device runs, for the script's printed commands
    (JetPack 6: 10.3; desktops: 10.x)."""
    return "10.3" if target.is_jetson else "10.9"


def polygraphy_lines(manifest: Manifest, trt_version: str) -> list[str]:
    """One Polygraphy command per graph, comparing TensorRT with ONNX Runtime layer by
    layer on the plain graphs (ONNX Runtime cannot run the plugin graph)."""
    plans = bundle_engine_plans(manifest, trt_version, None)
    return [shlex.join(polygraphy_argv(source, plan)) for source, plan in plans.values()]


def device_script(manifest: Manifest) -> str:
    """``finish_on_device.sh``: build the plugin, then both engines, then verify answers.

    The engines are built by ``python3 -m cotok_edge.build --finish .`` (TensorRT's
    Python API; no torch), which records them and their sha256 in the manifest and
    answers the parity slice with the runtime's TensorRT backend. Where the answers
    differ from the build's, the script prints the Polygraphy commands that compare
    TensorRT with ONNX Runtime layer by layer; the equivalent ``trtexec`` lines are in
    it as comments, for a device without TensorRT's Python bindings.
    """
    from cotok_edge.export.targets import get_target

    t = get_target(manifest.target)
    version = trt_version_for(t)
    plugin = manifest.plugin
    arch = "87" if t.is_jetson else "native"
    lines = [
        "#!/usr/bin/env bash",
        f"# Finish this bundle on the {t.name} device ({t.description}):",
        "# build the fused-TokenLearner plugin and the two TensorRT engines, then check",
        "# that the engines answer the parity slice as the ONNX graphs did at build time.",
        "# Needs TensorRT (Python API; or trtexec, below), numpy and cotok-edge's runtime:",
        "# no torch. Engines are not portable: run this on the device that will answer.",
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
    lines += [
        "# Engines with TensorRT's Python API, recorded in manifest.json, then the parity",
        "# slice answered with the runtime's TensorRT backend (exit 1: answers differ).",
        "status=0",
        "python3 -m cotok_edge.build --finish . || status=$?",
        'if [ "$status" -eq 1 ]; then',
        "  cat >&2 <<'POLYGRAPHY'",
        "The engines' answers differ from the build's. Compare TensorRT with ONNX Runtime",
        "layer by layer (pip install polygraphy); if the plain graphs agree, suspect the plugin:",
        *polygraphy_lines(manifest, version),
        "POLYGRAPHY",
        "fi",
        'exit "$status"',
        "",
        "# Without TensorRT's Python bindings, the same engines with trtexec (the runtime",
        "# reads engines recorded by --finish only):",
    ]
    if not t.is_jetson:
        lines.append("# (TensorRT 11.x is strongly typed: drop --fp16/--int8.)")
    plans = bundle_engine_plans(manifest, version, plugin.library if plugin else None)
    for graph, (source, plan) in plans.items():
        argv = trtexec_argv(source, engine_file(graph), plan)
        lines.append(f"# {trtexec_command(argv)}")
    return "\n".join(lines) + "\n"


def _read(bundle: Path, flag: str) -> Manifest | None:
    """The bundle's manifest, or None after printing why it cannot be read."""
    try:
        return read_manifest(bundle)
    except BundleError as e:
        print(f"error: {flag}: {e}", file=sys.stderr)
        return None


def finish(bundle: Path, quiet: bool = False) -> int:
    """On the device: build both engines of ``bundle`` (with the plugin library if it was
    built), record them in the manifest (and their sha256), then :func:`verify` them with
    the TensorRT backend. Exit status as :func:`verify`; 2 where no engine can be built."""
    from cotok_edge.runtime.backends import tensorrt as trt
    from cotok_edge.runtime.backends.tensorrt.build import build_bundle_engines

    log = Log()
    manifest = _read(bundle, "--finish")
    if manifest is None:
        return 2
    try:
        trt.import_tensorrt()
        trt.check_gpu(manifest.target, trt.gpu_info())
    except (trt.TensorRTUnavailable, ValueError) as e:
        print(f"error: --finish {bundle}: cannot build engines here: {e}", file=sys.stderr)
        return 2
    plugin = None
    if manifest.plugin is not None:
        lib = bundle / manifest.plugin.library
        if lib.is_file():
            plugin = lib
        else:
            log(f"no {manifest.plugin.library} (finish_on_device.sh builds it): plain graphs")
    manifest.engine, manifest.engine_status = build_bundle_engines(bundle, manifest, plugin, log)
    write_manifest(bundle, manifest)
    return verify(bundle, "tensorrt", quiet)


def verify(bundle: Path, backend: str = "auto", quiet: bool = False) -> int:
    """Answer the parity slice with ``backend`` and compare with the build-time answers.

    The clips come from the data the build used (the synthetic subset is generated
    again where it is missing). A backend running the deployed graphs (onnxruntime,
    tensorrt) is compared with the deployed answers, the torch backend (the FP32
    checkpoint) with the FP32 ones; agreement must meet the INT8 agreement bar.
    Prints one JSON line; exit status 0 agreed, 1 disagreed, 2 could not run.
    """
    from cotok_edge.data.text import normalize_answer
    from cotok_edge.runtime import load

    log = Log()
    manifest = _read(bundle, "--verify")
    if manifest is None:
        return 2
    answers_file = bundle / ANSWERS
    if not (manifest.parity or {}).get("slice") or not answers_file.is_file():
        print(
            f"error: --verify {bundle}: no parity slice and build-time answers "
            f"({ANSWERS}); only bundles written by python -m cotok_edge.build have them",
            file=sys.stderr,
        )
        return 2
    qa = manifest.parity["slice"]
    data = Path(qa["data"])
    if not data.is_dir() and qa.get("synthetic"):
        syn = qa["synthetic"]
        data = synthetic_subset(
            default_cache_root(), syn["calib_clips"], syn["test_clips"], not quiet
        )
    if not data.is_dir():
        print(f"error: --verify: the parity data {data} is not here", file=sys.stderr)
        return 2
    rows = json.loads(answers_file.read_text())
    try:
        qa_model = load(bundle, backend)
    except ValueError as e:  # BundleError, BackendUnavailableError, EngineMismatchError...
        print(f"error: --verify {bundle}: {e}", file=sys.stderr)
        return 2
    key = "torch_fp32" if qa_model.backend == "torch" else "deployed"
    by_clip: dict[tuple[str, Any, Any], list[dict[str, Any]]] = {}
    for r in rows:
        by_clip.setdefault((r["video"], r["start"], r["end"]), []).append(r)
    same = correct = 0
    for (video, _, _), group in by_clip.items():
        answers = qa_model.answer(str(data / "videos" / video), [r["question"] for r in group])
        for r, a in zip(group, answers, strict=True):
            same += a.text == r[key]
            correct += normalize_answer(a.text) in [normalize_answer(x) for x in r["answers"]]
    n = len(rows)
    agreement = same / n
    log(f"{qa_model.backend}: {n} questions, agreement with the build's {key} answers "
        f"{100 * agreement:.1f}%, accuracy {100 * correct / n:.1f}%")  # fmt: skip
    print(json.dumps({"backend": qa_model.backend, "compared_with": key, "questions": n,
                      "agreement": agreement, "accuracy": correct / n}))  # fmt: skip
    if VERIFY_AGREEMENT.passed(agreement):
        return 0
    if qa_model.backend == "tensorrt" and manifest.engine is not None:
        log("answers differ from the build's; compare TensorRT with ONNX Runtime layer by "
            "layer (pip install polygraphy): "
            + " ; ".join(polygraphy_lines(manifest, manifest.engine.tensorrt)))  # fmt: skip
    return 1
