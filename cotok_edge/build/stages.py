"""The build's stages, one function each, and :func:`build`, which runs them in order.

1. :func:`load_inputs`: the checkpoint (default: the shipped model) and the clips
   (``--calib-data``, or the shipped model's synthetic benchmark generated once into a
   cache) -> :class:`Inputs`;
2. :func:`export_fp32`: FP32 ONNX (video encoder + question decoder + explain graph),
   checked, scored with the runtime's ONNX Runtime backend against PyTorch (identical
   answers, logits within 1e-4) -> :class:`Graphs`;
3. :func:`quantize`: INT8 with ModelOpt: calibration (PTQ) on ``--calib-clips`` clips,
   then ``--qat-steps`` of QAT, each exported as Q/DQ ONNX (:func:`export_int8`) and
   scored -> :class:`Quantized` (the QAT graphs are the ones shipped);
4. :func:`write_bundle`: the bundle, in a temporary folder renamed to ``--out`` at the
   end: graphs, explain graph, plugin graph and sources, tokenizer, checkpoint, the
   build-time answers, ``report.md``, ``finish_on_device.sh`` and the
   :class:`~cotok_edge.manifest.Manifest`; engines too where TensorRT and a GPU of the
   target are here (otherwise the script finishes the bundle on the device).

The parity bars (values and labels) are :data:`cotok_edge.build.parity.BARS`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotok_edge.bundle import atomic_folder, write_manifest
from cotok_edge.contract import (
    QUESTION_DECODER,
    QUESTION_DECODER_EXPLAIN,
    QUESTION_DECODER_PLUGIN,
    VIDEO_ENCODER,
    onnx_file,
)
from cotok_edge.manifest import Manifest, PluginInfo

from .cli import MIN_CALIB_CLIPS
from .host import host_info, versions
from .log import Log
from .parity import ANSWERS, check_bars, default_cache_root, synthetic_subset, write_answers

__all__ = [
    "BuildInputError",
    "Graphs",
    "Inputs",
    "Quantized",
    "Scorer",
    "build",
    "export_fp32",
    "export_int8",
    "load_inputs",
    "quantize",
    "write_bundle",
]


class BuildInputError(ValueError):
    """A checkpoint or dataset that does not load (exit status 2); the message names it."""


@dataclass
class Inputs:
    """What the build works from.

    model: the FP32 ``CoTokVQA`` (eval mode); tokenizer: its tokenizer; checkpoint: its folder.
    test: the parity slice (``QASet``), test_batches its batches; calib: the calibration
    clips (INT8 only). data / fmt / synthetic: where the clips come from (``synthetic``:
    the subset's sizes when generated). warnings: for the report.
    """

    model: Any
    tokenizer: Any
    checkpoint: Path
    test: Any
    test_batches: list[dict[str, Any]]
    calib: Any | None
    data: Path
    fmt: str
    synthetic: dict[str, int] | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Graphs:
    """One exported set of graphs: its folder, the ONNX spec, the parity row it was scored as
    and its answers on the parity slice (``scoring.Predictions``)."""

    folder: Path
    spec: dict[str, Any]
    row: str
    predictions: Any


@dataclass
class Quantized:
    """The INT8 result: the fake-quant model, the graphs shipped (QAT, else PTQ), and the
    manifest's ``quantization`` entry."""

    model: Any
    graphs: Graphs
    info: dict[str, Any]


class Scorer:
    """Scores predictions on the parity slice against PyTorch FP32; keeps one row each.

    ``rows[name]``: accuracy (overall, per category), agreement with PyTorch FP32 and
    logit errors (``export.scoring``).
    """

    def __init__(self, inputs: Inputs, threads: int | None):
        from cotok_edge.export import scoring

        self._scoring, self.inputs, self.threads = scoring, inputs, threads
        self.reference = scoring.torch_predictions(inputs.model, inputs.test_batches)
        self.rows: dict[str, dict[str, Any]] = {}
        self.add("torch fp32", self.reference)

    def add(self, row: str, pred: Any) -> Any:
        s, inp = self._scoring, self.inputs
        scores = s.score(pred, inp.test.clips, inp.tokenizer)
        self.rows[row] = {**scores, **s.compare(self.reference, pred)}
        return pred

    def graphs(self, row: str, folder: Path, spec: dict[str, Any]) -> Graphs:
        """Answer the slice with ``folder``'s two graphs through the runtime's ONNX Runtime
        backend (:class:`~cotok_edge.export.ort.OrtChain` is its parity view)."""
        from cotok_edge.export.ort import OrtChain

        chain = OrtChain(
            folder / onnx_file(VIDEO_ENCODER), folder / onnx_file(QUESTION_DECODER),
            threads=self.threads,
        )  # fmt: skip
        pad_id = self.inputs.model.config.text.pad_id
        pred = self._scoring.ort_predictions(chain, self.inputs.test_batches, pad_id)
        return Graphs(folder, spec, row, self.add(row, pred))


# Stages ------------------------------------------------------------------------------
def load_inputs(args: argparse.Namespace, log: Log) -> Inputs:
    """Load the checkpoint and the clips; :class:`BuildInputError` when either does not."""
    from cotok_edge.data.text import load_tokenizer
    from cotok_edge.export import calibration
    from cotok_edge.model.vqa import DEFAULT_CHECKPOINT, CoTokVQA

    progress = not args.quiet
    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        model = CoTokVQA.from_pretrained(ckpt).eval()
        tokenizer = load_tokenizer(ckpt / "tokenizer.json")
    except (OSError, ValueError) as e:
        raise BuildInputError(f"--checkpoint {ckpt}: does not load: {e}") from None
    cfg = model.config
    log(f"checkpoint {ckpt} ({cfg.name}, {sum(p.numel() for p in model.parameters()):,} params)")
    cache_root = args.cache_dir or default_cache_root()
    if args.calib_data is None:
        log("clips: the shipped model's synthetic benchmark (seed 0), generated once")
        data = synthetic_subset(cache_root, args.calib_clips, args.test_clips, progress=progress)
        fmt = "msrvtt-qa"
        synthetic = {"calib_clips": args.calib_clips, "test_clips": args.test_clips}
    else:
        data, fmt, synthetic = args.calib_data, args.calib_format, None
    try:
        test = calibration.load_qa(
            data, fmt, args.test_split, cfg, args.test_clips, cache_root, progress
        )
        calib = None
        if args.precision == "int8":
            calib = calibration.load_qa(
                data, fmt, "train", cfg, args.calib_clips, cache_root, progress
            )
    except (OSError, ValueError) as e:
        raise BuildInputError(f"--calib-data {data}: {e}") from None
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
    return Inputs(
        model, tokenizer, Path(ckpt), test, calibration.qa_batches(test, tokenizer, cfg),
        calib, Path(data), fmt, synthetic, warnings,
    )  # fmt: skip


def export_fp32(inputs: Inputs, scratch: Path, target: Any, scorer: Scorer) -> Graphs:
    """FP32 graphs (and the explain graph) in ``scratch/fp32``, row ``onnxruntime fp32``."""
    from cotok_edge.export.onnx import export_model

    spec = export_model(inputs.model, scratch / "fp32", target=target, explain=True)
    return scorer.graphs("onnxruntime fp32", scratch / "fp32", spec)


def export_int8(qmodel: Any, scratch: Path, name: str, target: Any, scorer: Scorer) -> Graphs:
    """The fake-quant model as Q/DQ graphs into ``scratch/name``, scored as
    ``onnxruntime int8 (NAME)``."""
    from cotok_edge.export.onnx import export_model

    spec = export_model(qmodel, scratch / name, target=target)
    return scorer.graphs(f"onnxruntime int8 ({name.upper()})", scratch / name, spec)


def quantize(
    inputs: Inputs,
    args: argparse.Namespace,
    scratch: Path,
    target: Any,
    scorer: Scorer,
    log: Log,
    timings: dict[str, float],
) -> Quantized:
    """PTQ calibration, then ``--qat-steps`` of QAT; exports and scores each."""
    from cotok_edge.export import calibration, qat

    progress = not args.quiet
    calib, cfg = inputs.calib, inputs.model.config
    assert calib is not None
    batches = calibration.qa_batches(calib, inputs.tokenizer, cfg, clips_per_batch=8)
    log(f"INT8: calibrating on {len(calib.clips)} clips ({calib.questions} questions)")
    t0 = time.perf_counter()
    qmodel = qat.quantize_ptq(copy.deepcopy(inputs.model), batches, progress=progress)
    timings["calibration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shipped = export_int8(qmodel, scratch, "ptq", target, scorer)
    timings["export+score ptq"] = time.perf_counter() - t0
    losses: list[float] = []
    if args.qat_steps:
        log(f"INT8: {args.qat_steps} QAT steps, lr {args.qat_lr:g}")
        t0 = time.perf_counter()
        qat_batches = calibration.qa_batches(
            calib, inputs.tokenizer, cfg, clips_per_batch=args.qat_clips
        )
        losses = qat.qat_finetune(
            qmodel, qat.cycle(qat_batches), args.qat_steps, lr=args.qat_lr, progress=progress
        )
        timings["qat"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        shipped = export_int8(qmodel, scratch, "qat", target, scorer)
        timings["export+score qat"] = time.perf_counter() - t0
    info = {
        "method": "QAT" if args.qat_steps else "PTQ",
        "calibration_clips": len(calib.clips),
        "qat_steps": args.qat_steps,
        "qat_lr": args.qat_lr,
        "qat_clips_per_step": args.qat_clips,
        "qat_loss_first_last": [losses[0], losses[-1]] if losses else None,
        "quantizers": qat.quantizer_summary(qmodel),
        "kept_float": list(qat.KEEP_FLOAT),
        "shipped": shipped.row,
    }
    return Quantized(qmodel, shipped, info)


def _copy_plugin_sources(dest: Path) -> None:
    from cotok_edge.kernels import __file__ as kernels_init

    src = Path(kernels_init).parent
    (dest / "csrc").mkdir(parents=True)
    for f in sorted((src / "csrc").iterdir()):
        if f.suffix in (".cu", ".h", ".cpp"):
            shutil.copyfile(f, dest / "csrc" / f.name)
    shutil.copyfile(src / "CMakeLists.txt", dest / "CMakeLists.txt")


def _answer_rows(inputs: Inputs, deployed: Any, scorer: Scorer) -> list[dict[str, Any]]:
    """The parity slice's build-time answers (reference FP32 and deployed graphs), which
    ``--verify`` compares a device's answers with."""
    from cotok_edge.export.scoring import texts

    ref_t = texts(scorer.reference, inputs.tokenizer)
    dep_t = texts(deployed, inputs.tokenizer)
    rows, k = [], 0
    for clip in inputs.test.clips:
        for q, answers, cat in zip(clip.questions, clip.answers, clip.category_ids, strict=True):
            rows.append({
                "video": Path(clip.video_path).name, "start": clip.start, "end": clip.end,
                "question": q, "category_id": cat, "answers": list(answers),
                "torch_fp32": ref_t[k], "deployed": dep_t[k],
            })  # fmt: skip
            k += 1
    return rows


def write_bundle(
    args: argparse.Namespace,
    target: Any,
    inputs: Inputs,
    fp32: Graphs,
    quantized: Quantized | None,
    scorer: Scorer,
    bars: dict[str, dict[str, Any]],
    timings: dict[str, float],
    started: float,
    log: Log,
) -> Manifest:
    """Write the bundle into a temporary folder and rename it to ``--out``; return its manifest.

    ``timings`` (seconds per stage) gets ``total``, measured from ``started``."""
    from cotok_edge.export import qat
    from cotok_edge.export.onnx import export_question_decoder
    from cotok_edge.export.report import render_report
    from cotok_edge.flops import model_budget

    from .finish import device_script

    deployed = quantized.graphs if quantized is not None else fp32
    deployed_model = quantized.model if quantized is not None else inputs.model
    cfg = inputs.model.config
    log(f"writing the bundle to {args.out}")
    with atomic_folder(args.out, force=args.force) as tmp:
        for graph in (VIDEO_ENCODER, QUESTION_DECODER):
            shutil.copyfile(deployed.folder / onnx_file(graph), tmp / onnx_file(graph))
        explain = onnx_file(QUESTION_DECODER_EXPLAIN)
        shutil.copyfile(fp32.folder / explain, tmp / explain)
        onnx_spec = copy.deepcopy(deployed.spec)
        graphs = onnx_spec["graphs"]
        graphs[QUESTION_DECODER_EXPLAIN] = fp32.spec["graphs"][QUESTION_DECODER_EXPLAIN]
        if args.plugin:
            plugin_spec = export_question_decoder(
                deployed_model, tmp / onnx_file(QUESTION_DECODER_PLUGIN), variant="plugin",
                target=target,
            )  # fmt: skip
            graphs[QUESTION_DECODER_PLUGIN] = plugin_spec.to_dict()
            _copy_plugin_sources(tmp / "plugins")
        shutil.copyfile(inputs.checkpoint / "tokenizer.json", tmp / "tokenizer.json")
        inputs.model.save_pretrained(tmp / "checkpoint")
        shutil.copyfile(inputs.checkpoint / "tokenizer.json", tmp / "checkpoint" / "tokenizer.json")
        if quantized is not None:
            qat.save_quantized(deployed_model, tmp / "quantized" / "model.modelopt.pth")
        write_answers(tmp / ANSWERS, _answer_rows(inputs, deployed.predictions, scorer))
        budget = model_budget(inputs.model)
        test = inputs.test
        manifest = Manifest(
            target=target.name,
            precision=args.precision,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            model_config=cfg.to_dict(),
            checkpoint="checkpoint/",
            tokenizer="tokenizer.json",
            onnx=onnx_spec,
            quantization=None if quantized is None else quantized.info,
            dla=args.dla,
            plugin=PluginInfo() if args.plugin else None,
            target_info=target.to_dict(),
            budget_macs={**budget.components, "total": budget.total},
            parity={
                "slice": {
                    "data": str(inputs.data),
                    "format": inputs.fmt,
                    "split": args.test_split,
                    "clips": len(test.clips),
                    "questions": test.questions,
                    "synthetic": inputs.synthetic,
                },
                "rows": scorer.rows,
                "bars": bars,
            },  # fmt: skip
            warnings=inputs.warnings,
            versions=versions(),
            host=host_info(),
            build_seconds=timings,
            command=" ".join(["python -m cotok_edge.build", *sys.argv[1:]]),
        )
        _maybe_build_engines(tmp, manifest, log)
        timings["total"] = time.perf_counter() - started
        if target.tensorrt:
            (tmp / "finish_on_device.sh").write_text(device_script(manifest))
            (tmp / "finish_on_device.sh").chmod(0o755)
        (tmp / "report.md").write_text(render_report(manifest))
        write_manifest(tmp, manifest)
    return manifest


def _maybe_build_engines(bundle: Path, manifest: Manifest, log: Log) -> None:
    """Engines for both graphs when TensorRT and a GPU of the target are here; sets the
    manifest's ``engine`` and ``engine_status`` (why not, when none was built). A host
    build never has the plugin library (finish_on_device.sh builds it), so it builds
    the plain graphs."""
    from cotok_edge.runtime.backends import tensorrt as trt
    from cotok_edge.runtime.backends.tensorrt.build import build_bundle_engines

    try:
        trt.import_tensorrt()
        trt.check_gpu(manifest.target, trt.gpu_info())
    except (trt.TensorRTUnavailable, ValueError) as e:
        log(f"no engine built here: {e}")
        manifest.engine, manifest.engine_status = None, {"built": False, "reason": str(e)}
        return
    manifest.engine, manifest.engine_status = build_bundle_engines(bundle, manifest, None, log)


# The whole build ---------------------------------------------------------------------
def build(args: argparse.Namespace) -> int:
    """Run the build described by validated ``args`` (:func:`.cli.parse_args`); return the
    exit status: 0 every parity bar met, 1 one missed, 2 a checkpoint or dataset that
    does not load."""
    import torch

    from cotok_edge.export.targets import get_target

    log = Log()
    if args.threads:
        torch.set_num_threads(args.threads)
    target = get_target(args.target)
    try:
        inputs = load_inputs(args, log)
    except BuildInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cotok-build-") as scratch_dir:
        scratch = Path(scratch_dir)
        started = time.perf_counter()
        log("exporting and checking the FP32 graphs; scoring PyTorch and ONNX Runtime")
        scorer = Scorer(inputs, args.threads)
        fp32 = export_fp32(inputs, scratch, target, scorer)
        timings["export+score fp32"] = time.perf_counter() - started
        quantized = None
        if args.precision == "int8":
            quantized = quantize(inputs, args, scratch, target, scorer, log, timings)
        bars = check_bars(scorer.rows, args.precision)
        failed = [name for name, b in bars.items() if not b["passed"]]
        if failed and args.strict:
            print(f"error: parity bars missed ({', '.join(failed)}); --strict: no bundle "
                  "written", file=sys.stderr)  # fmt: skip
            return 1
        manifest = write_bundle(
            args, target, inputs, fp32, quantized, scorer, bars, timings, started, log
        )
    log("done")
    _print_summary(args, target, scorer.rows, bars, manifest.engine is not None)
    return 1 if failed else 0


def _sure_note(row: dict[str, Any]) -> str:
    """Agreement on the questions FP32 answers with a clear margin, where there are any."""
    if row.get("sure_agreement") is None:
        return ""
    return f"  (sure {100 * row['sure_share']:.0f}%: agreement {100 * row['sure_agreement']:.1f}%)"


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
            + _sure_note(r)
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
