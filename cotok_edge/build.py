"""Turn a checkpoint into a verified deployment bundle for a target.

    python -m cotok_edge.build --target jetson-orin [--precision int8|fp16|fp32]
        [--checkpoint DIR] [--out DIR] [--force] [--calib-data DIR] [--qat-steps N]
        [--plugin/--no-plugin]

Steps (each with its own progress line):

1. validate every argument before any work (target, precision, DLA, plugin, checkpoint,
   data, output folder);
2. load the checkpoint (default: the shipped model) and the clips: ``--calib-data``, or
   the shipped model's synthetic benchmark generated once into a cache;
3. export FP32 ONNX (video encoder + question decoder), check it, and measure ONNX
   Runtime against PyTorch on the test slice (identical answers, logits within 1e-4);
4. INT8: ModelOpt calibration (PTQ) on ``--calib-clips`` training clips, then
   ``--qat-steps`` of QAT, each exported as Q/DQ ONNX and scored with ONNX Runtime
   (accuracy, agreement with FP32); the QAT graphs are the ones shipped;
5. write the bundle (:mod:`cotok_edge.bundle`) in a temporary folder: graphs, the
   explain graph, tokenizer, checkpoint, plugin sources, ``report.md``,
   ``finish_on_device.sh``, manifest with sha256 of every file; then rename it to
   ``--out``;
6. build the TensorRT engines when TensorRT and a GPU of the target are here; otherwise
   print the one command that finishes the bundle on the device.

Exit status: 0 built (parity bars met), 1 built but a parity bar was missed (the report
says which; ``--strict`` turns that into no bundle at all), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bundle import atomic_folder, write_manifest
from .manifest import Manifest, PluginInfo

PARITY_BARS = {
    "fp32_answers_identical": 1.0,
    "fp32_max_logit_error": 1e-4,
    "int8_accuracy_drop_points": 1.0,
    "int8_agreement": 0.97,
}
MIN_CALIB_CLIPS = 512


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from .data.datasets import FORMATS
    from .export.targets import target_names

    p = argparse.ArgumentParser(
        prog="python -m cotok_edge.build",
        description="Build a deployment bundle (ONNX, INT8 Q/DQ, TensorRT plan) for a target.",
    )
    p.add_argument("--target", help=f"one of: {', '.join(target_names())}")
    p.add_argument("--precision", help="int8 | fp16 | fp32 (default: the target's first, int8)")
    p.add_argument("--checkpoint", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--out", type=Path, help="bundle folder (default: bundles/TARGET-PRECISION)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--calib-data", type=Path, help="QA dataset for calibration, QAT, parity")
    p.add_argument("--calib-format", default="msrvtt-qa", choices=FORMATS,
                   help="format of --calib-data")  # fmt: skip
    p.add_argument("--calib-clips", type=int, default=MIN_CALIB_CLIPS, help="calibration clips")
    p.add_argument("--test-clips", type=int, default=100, help="clips of the parity slice")
    p.add_argument("--test-split", default="test", help="split of the parity slice")
    p.add_argument("--qat-steps", type=int, default=40, help="QAT steps (0: PTQ only)")
    p.add_argument("--qat-lr", type=float, default=1e-5)
    p.add_argument("--qat-clips", type=int, default=8, help="clips per QAT step")
    p.add_argument("--plugin", action=argparse.BooleanOptionalAction, default=None,
                   help="also export the fused-TokenLearner plugin graph (default: on for "
                   "TensorRT targets)")  # fmt: skip
    p.add_argument("--dla", action="store_true", help="build for DLA (Orin NX/AGX only)")
    p.add_argument("--cache-dir", type=Path, help="generated/decoded clip cache")
    p.add_argument("--strict", action="store_true", help="no bundle when a parity bar is missed")
    p.add_argument("--threads", type=int, help="torch/ONNX Runtime threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--finish",
        type=Path,
        metavar="BUNDLE",
        help="on the device: build the TensorRT engines of BUNDLE, then --verify",
    )
    p.add_argument(
        "--verify",
        type=Path,
        metavar="BUNDLE",
        help="answer BUNDLE's parity slice again and compare with the build",
    )
    p.add_argument("--backend", default="auto", help="runtime backend for --verify")
    args = p.parse_args(argv)
    if args.finish or args.verify:
        folder = args.finish or args.verify
        if not (folder / "manifest.json").is_file():
            p.error(f"{folder}: not a bundle (no manifest.json)")
        return args
    if args.target is None:
        p.error("--target is required (or --finish/--verify BUNDLE)")
    try:
        _validate(args)
    except ValueError as e:
        p.error(str(e))
    return args


def _validate(args: argparse.Namespace) -> None:
    from .export.targets import get_target, validate

    t = get_target(args.target)
    args.precision = (args.precision or t.precisions[0]).lower()
    if args.plugin is None:
        args.plugin = bool(t.tensorrt)
    validate(t, args.precision, dla=args.dla, plugin=args.plugin)
    args.target = t.name
    for name in ("calib_clips", "test_clips", "qat_clips"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.qat_steps < 0:
        raise ValueError("--qat-steps must be 0 or more")
    if args.qat_lr <= 0:
        raise ValueError("--qat-lr must be positive")
    if args.calib_data is not None and not args.calib_data.is_dir():
        raise ValueError(f"--calib-data {args.calib_data}: no such folder")
    if args.checkpoint is not None:
        ck = args.checkpoint
        if not ck.is_dir():
            raise ValueError(f"--checkpoint {ck}: no such folder")
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (ck / f).is_file():
                raise ValueError(f"--checkpoint {ck}: no {f} (a folder written by train)")
    if args.out is None:
        args.out = Path("bundles") / f"{args.target}-{args.precision}"
    if args.out.exists() and not args.force:
        raise ValueError(f"--out {args.out} exists; pass --force to replace it")


class Log:
    """Progress lines on stderr with the elapsed time; stdout stays for the final summary."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("cotok-edge", "torch", "onnx", "onnxruntime", "nvidia-modelopt", "tensorrt"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host() -> dict[str, Any]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform()}


def build(args: argparse.Namespace) -> int:
    """Run the build described by parsed ``args``; return the exit status."""
    import torch

    from .data.text import load_tokenizer
    from .export import calibration, qat, scoring
    from .export.onnx import export_model
    from .export.ort import OrtChain
    from .export.report import device_script, render_report
    from .export.targets import get_target
    from .flops import model_budget
    from .model.vqa import DEFAULT_CHECKPOINT, CoTokVQA

    log = Log()
    progress = not args.quiet
    if args.threads:
        torch.set_num_threads(args.threads)
    target = get_target(args.target)
    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        model = CoTokVQA.from_pretrained(ckpt).eval()
        tokenizer = load_tokenizer(ckpt / "tokenizer.json")
    except (OSError, ValueError) as e:
        print(f"error: --checkpoint {ckpt}: does not load: {e}", file=sys.stderr)
        return 2
    cfg = model.config
    log(f"checkpoint {ckpt} ({cfg.name}, {sum(p.numel() for p in model.parameters()):,} params)")

    cache_root = args.cache_dir or calibration.default_cache_root()
    if args.calib_data is None:
        log("clips: the shipped model's synthetic benchmark (seed 0), generated once")
        data = calibration.synthetic_subset(
            cache_root, args.calib_clips, args.test_clips, progress=progress
        )
        fmt = "msrvtt-qa"
        synthetic = {"calib_clips": args.calib_clips, "test_clips": args.test_clips}
    else:
        data, fmt, synthetic = args.calib_data, args.calib_format, None
    try:
        test = calibration.load_qa(
            data, fmt, args.test_split, cfg, args.test_clips, cache_root, progress
        )
        calib = (
            calibration.load_qa(data, fmt, "train", cfg, args.calib_clips, cache_root, progress)
            if args.precision == "int8"
            else None
        )
    except (OSError, ValueError) as e:
        print(f"error: --calib-data {data}: {e}", file=sys.stderr)
        return 2
    test_batches = calibration.qa_batches(test, tokenizer, cfg)
    log(f"parity slice: {len(test.clips)} clips, {test.questions} questions ({args.test_split})")
    warnings: list[str] = []
    if args.precision == "fp16":
        warnings.append(
            "fp16: the graphs are FP32; TensorRT 10.x builds FP16 from them (builder flag), "
            "so FP16 parity is measured on the device (finish_on_device.sh runs --verify)"
        )
    if calib is not None and len(calib.clips) < MIN_CALIB_CLIPS:
        warnings.append(
            f"calibrated on {len(calib.clips)} clips, fewer than the {MIN_CALIB_CLIPS} asked for"
        )

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cotok-build-") as scratch_dir:
        scratch = Path(scratch_dir)
        # FP32 reference: PyTorch, then the exported graphs through ONNX Runtime.
        t0 = time.perf_counter()
        specs = {"fp32": export_model(model, scratch / "fp32", target=target, explain=True)}
        timings["export fp32"] = time.perf_counter() - t0
        log("FP32 ONNX exported and checked; scoring PyTorch and ONNX Runtime")
        t0 = time.perf_counter()
        ref = scoring.torch_predictions(model, test_batches)
        rows: dict[str, dict[str, Any]] = {}

        def score_row(row: str, pred: scoring.Predictions) -> scoring.Predictions:
            rows[row] = {
                **scoring.score(pred, test.clips, tokenizer),
                **scoring.compare(ref, pred),
            }
            return pred

        def score_graphs(row: str, folder: str) -> scoring.Predictions:
            """ONNX Runtime on ``scratch/folder``'s two graphs: answers of the test slice."""
            chain = OrtChain(
                scratch / folder / "video_encoder.onnx",
                scratch / folder / "question_decoder.onnx",
                threads=args.threads,
            )
            return score_row(row, scoring.ort_predictions(chain, test_batches, cfg.text.pad_id))

        score_row("torch fp32", ref)
        deployed_pred = score_graphs("onnxruntime fp32", "fp32")
        timings["parity fp32"] = time.perf_counter() - t0

        deployed_model = model
        deployed_dir = scratch / "fp32"
        quant_info: dict[str, Any] | None = None
        if args.precision == "int8":
            assert calib is not None
            calib_batches = calibration.qa_batches(calib, tokenizer, cfg, clips_per_batch=8)
            log(f"INT8: calibrating on {len(calib.clips)} clips ({calib.questions} questions)")
            t0 = time.perf_counter()
            qmodel = qat.quantize_ptq(copy.deepcopy(model), calib_batches, progress=progress)
            timings["calibration"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            specs["ptq"] = export_model(qmodel, scratch / "ptq", target=target)
            ptq = score_graphs("onnxruntime int8 (PTQ)", "ptq")
            timings["export+score ptq"] = time.perf_counter() - t0
            deployed_model, deployed_dir, chosen = qmodel, scratch / "ptq", "onnxruntime int8 (PTQ)"
            deployed_pred = ptq
            losses: list[float] = []
            if args.qat_steps:
                log(f"INT8: {args.qat_steps} QAT steps, lr {args.qat_lr:g}")
                t0 = time.perf_counter()
                qat_batches = calibration.qa_batches(
                    calib, tokenizer, cfg, clips_per_batch=args.qat_clips
                )
                losses = qat.qat_finetune(
                    qmodel, qat.cycle(qat_batches), args.qat_steps, lr=args.qat_lr,
                    progress=progress,
                )  # fmt: skip
                timings["qat"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                specs["qat"] = export_model(qmodel, scratch / "qat", target=target)
                qat_pred = score_graphs("onnxruntime int8 (QAT)", "qat")
                timings["export+score qat"] = time.perf_counter() - t0
                deployed_dir, chosen = scratch / "qat", "onnxruntime int8 (QAT)"
                deployed_pred = qat_pred
            quant_info = {
                "method": "QAT" if args.qat_steps else "PTQ",
                "calibration_clips": len(calib.clips),
                "qat_steps": args.qat_steps,
                "qat_lr": args.qat_lr,
                "qat_clips_per_step": args.qat_clips,
                "qat_loss_first_last": [losses[0], losses[-1]] if losses else None,
                "quantizers": qat.quantizer_summary(qmodel),
                "kept_float": list(qat.KEEP_FLOAT),
                "shipped": chosen,
            }

        bars = _check_bars(rows, args.precision)
        failed = [name for name, ok in bars.items() if not ok["passed"]]
        if failed and args.strict:
            print(f"error: parity bars missed ({', '.join(failed)}); --strict: no bundle "
                  "written", file=sys.stderr)  # fmt: skip
            return 1

        log(f"writing the bundle to {args.out}")
        with atomic_folder(args.out, force=args.force) as tmp:
            for name in ("video_encoder.onnx", "question_decoder.onnx"):
                shutil.copyfile(deployed_dir / name, tmp / name)
            shutil.copyfile(
                scratch / "fp32" / "question_decoder_explain.onnx",
                tmp / "question_decoder_explain.onnx",
            )
            onnx_spec = copy.deepcopy(specs[deployed_dir.name])
            onnx_spec["graphs"]["question_decoder_explain"] = specs["fp32"]["graphs"][
                "question_decoder_explain"
            ]
            if args.plugin:
                from .export.onnx import export_question_decoder

                plugin_spec = export_question_decoder(
                    deployed_model, tmp / "question_decoder_plugin.onnx", variant="plugin",
                    target=target,
                )  # fmt: skip
                onnx_spec["graphs"]["question_decoder_plugin"] = plugin_spec.to_dict()
                _copy_plugin_sources(tmp / "plugins")
            shutil.copyfile(ckpt / "tokenizer.json", tmp / "tokenizer.json")
            model.save_pretrained(tmp / "checkpoint")
            shutil.copyfile(ckpt / "tokenizer.json", tmp / "checkpoint" / "tokenizer.json")
            if quant_info is not None:
                qat.save_quantized(deployed_model, tmp / "quantized" / "model.modelopt.pth")
            budget = model_budget(model)
            _write_answers(tmp / "parity" / "answers.json", test, tokenizer, ref, deployed_pred)
            timings["total"] = time.perf_counter() - t_start
            manifest = Manifest(
                target=target.name,
                precision=args.precision,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                model_config=cfg.to_dict(),
                checkpoint="checkpoint/",
                tokenizer="tokenizer.json",
                onnx=onnx_spec,
                quantization=quant_info,
                dla=args.dla,
                plugin=PluginInfo() if args.plugin else None,
                target_info=target.to_dict(),
                budget_macs={**budget.components, "total": budget.total},
                parity={
                    "slice": {
                        "data": str(data),
                        "format": fmt,
                        "split": args.test_split,
                        "clips": len(test.clips),
                        "questions": test.questions,
                        "synthetic": synthetic,
                    },
                    "rows": rows,
                    "bars": bars,
                },  # fmt: skip
                warnings=warnings,
                versions=_versions(),
                host=_host(),
                build_seconds=timings,
                command=" ".join(["python -m cotok_edge.build", *sys.argv[1:]]),
            )
            _maybe_build_engines(tmp, manifest, log)
            timings["total"] = time.perf_counter() - t_start
            if target.tensorrt:
                (tmp / "finish_on_device.sh").write_text(device_script(manifest))
                (tmp / "finish_on_device.sh").chmod(0o755)
            (tmp / "report.md").write_text(render_report(manifest))
            write_manifest(tmp, manifest)
    log("done")
    _print_summary(args, target, rows, bars, manifest.engine is not None)
    return 1 if failed else 0


def _check_bars(rows: dict[str, dict[str, Any]], precision: str) -> dict[str, dict[str, Any]]:
    ort = rows["onnxruntime fp32"]
    bars: dict[str, dict[str, Any]] = {
        "fp32 answers identical": {
            "value": ort["agreement"], "bar": ">= 1.0",
            "passed": ort["agreement"] >= PARITY_BARS["fp32_answers_identical"],
        },
        "fp32 max logit error": {
            "value": ort["max_logit_error"], "bar": "<= 1e-4",
            "passed": ort["max_logit_error"] <= PARITY_BARS["fp32_max_logit_error"],
        },
    }  # fmt: skip
    if precision == "int8":
        key = "onnxruntime int8 (QAT)" if "onnxruntime int8 (QAT)" in rows else None
        key = key or "onnxruntime int8 (PTQ)"
        drop = 100 * (rows["torch fp32"]["accuracy"] - rows[key]["accuracy"])
        bars[f"{key} accuracy drop (points)"] = {
            "value": drop, "bar": "<= 1.0",
            "passed": drop <= PARITY_BARS["int8_accuracy_drop_points"],
        }  # fmt: skip
        bars[f"{key} answer agreement"] = {
            "value": rows[key]["agreement"], "bar": ">= 0.97",
            "passed": rows[key]["agreement"] >= PARITY_BARS["int8_agreement"],
        }  # fmt: skip
    return bars


def _copy_plugin_sources(dest: Path) -> None:
    from .kernels import __file__ as kernels_init

    src = Path(kernels_init).parent
    (dest / "csrc").mkdir(parents=True)
    for f in sorted((src / "csrc").iterdir()):
        if f.suffix in (".cu", ".h", ".cpp"):
            shutil.copyfile(f, dest / "csrc" / f.name)
    shutil.copyfile(src / "CMakeLists.txt", dest / "CMakeLists.txt")


def _maybe_build_engines(bundle: Path, manifest: Manifest, log: Log) -> None:
    """Engines for both graphs when TensorRT and a GPU of the target are here; sets the
    manifest's ``engine`` and ``engine_status`` (why not, when none was built). A host
    build never has the plugin library (finish_on_device.sh builds it), so it builds
    the plain graphs."""
    from .runtime.backends import tensorrt as trt
    from .runtime.backends.tensorrt.build import build_bundle_engines

    try:
        trt.import_tensorrt()
        trt.check_gpu(manifest.target, trt.gpu_info())
    except (trt.TensorRTUnavailable, ValueError) as e:
        log(f"no engine built here: {e}")
        manifest.engine, manifest.engine_status = None, {"built": False, "reason": str(e)}
        return
    manifest.engine, manifest.engine_status = build_bundle_engines(bundle, manifest, None, log)


def _write_answers(path: Path, qa: Any, tokenizer: object, ref: Any, deployed: Any) -> None:
    """Build-time answers of the parity slice (reference FP32 and deployed graphs), which
    ``--verify`` compares a device's answers with."""
    from .export.scoring import texts

    ref_t, dep_t = texts(ref, tokenizer), texts(deployed, tokenizer)
    rows, k = [], 0
    for clip in qa.clips:
        for q, answers, cat in zip(clip.questions, clip.answers, clip.category_ids, strict=True):
            rows.append({
                "video": Path(clip.video_path).name, "start": clip.start, "end": clip.end,
                "question": q, "category_id": cat, "answers": list(answers),
                "torch_fp32": ref_t[k], "deployed": dep_t[k],
            })  # fmt: skip
            k += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def finish(bundle: Path, quiet: bool = False) -> int:
    """On the device: build both engines of ``bundle`` (with the plugin library if it was
    built), record them in the manifest (and their sha256), then :func:`verify`."""
    from .bundle import read_manifest
    from .runtime.backends import tensorrt as trt
    from .runtime.backends.tensorrt.build import build_bundle_engines

    log = Log()
    manifest = read_manifest(bundle)
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
    checkpoint) with the FP32 ones; agreement must be at least 97%.
    """
    from .bundle import read_manifest
    from .export import calibration
    from .runtime import load

    log = Log()
    try:
        manifest = read_manifest(bundle)
    except ValueError as e:
        print(f"error: --verify: {e}", file=sys.stderr)
        return 2
    answers_file = bundle / "parity" / "answers.json"
    if not (manifest.parity or {}).get("slice") or not answers_file.is_file():
        print(
            f"error: --verify {bundle}: no parity slice and build-time answers "
            "(parity/answers.json); only bundles written by python -m cotok_edge.build have them",
            file=sys.stderr,
        )
        return 2
    qa = manifest.parity["slice"]
    data = Path(qa["data"])
    if not data.is_dir() and qa.get("synthetic"):
        syn = qa["synthetic"]
        data = calibration.synthetic_subset(
            calibration.default_cache_root(), syn["calib_clips"], syn["test_clips"], not quiet
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
            correct += normalize(a.text) in [normalize(x) for x in r["answers"]]
    n = len(rows)
    agreement = same / n
    log(f"{qa_model.backend}: {n} questions, agreement with the build's {key} answers "
        f"{100 * agreement:.1f}%, accuracy {100 * correct / n:.1f}%")  # fmt: skip
    print(json.dumps({"backend": qa_model.backend, "compared_with": key, "questions": n,
                      "agreement": agreement, "accuracy": correct / n}))  # fmt: skip
    return 0 if agreement >= PARITY_BARS["int8_agreement"] else 1


def normalize(text: str) -> str:
    from .data.text import normalize_answer

    return normalize_answer(text)


def _print_summary(
    args: argparse.Namespace,
    target: Any,
    rows: dict[str, dict[str, Any]],
    bars: dict[str, dict[str, Any]],
    engine_built: bool,
) -> None:
    print(f"bundle: {args.out} (target {target.name}, {args.precision})")
    for name, r in rows.items():
        print(
            f"  {name:<24} accuracy {100 * r['accuracy']:5.1f}%  agreement "
            f"{100 * r['agreement']:5.1f}%  max |logit err| {r['max_logit_error']:.2e}"
        )
    for name, b in bars.items():
        print(f"  bar {name}: {b['value']:.4g} ({b['bar']}) {'ok' if b['passed'] else 'MISSED'}")
    print("next:")
    if target.tensorrt and not engine_built:
        print(f"  on the {target.name} device:  bash {args.out}/finish_on_device.sh")
    print(
        f"  answer:  python -m cotok_edge.answer --bundle {args.out} --video clip.mp4 "
        '--question "what color is the big object?"'
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.finish:
        return finish(args.finish, args.quiet)
    if args.verify:
        return verify(args.verify, args.backend, args.quiet)
    try:
        return build(args)
    except KeyboardInterrupt:
        print("interrupted: no bundle written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["build", "main", "parse_args"]
