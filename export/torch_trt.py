"""Torch-TensorRT path: the two graphs compiled AOT (``ir="dynamo"``), saved as exported programs.

An alternative to the ONNX -> TensorRT route for desktop GPUs: no ONNX export, the
engines live inside ``torch.export`` programs that ``torch.export.load(path).module()``
runs (with ``torch_tensorrt`` imported). Shapes are static (the batch given at compile
time): Torch-TensorRT specialises the exported program on the example inputs.

Version pinning: a ``torch_tensorrt`` release is built against one torch minor release
and one TensorRT minor release. ``torch_tensorrt 2.13.0``'s wheel metadata requires
``torch>=2.13.0,<2.14.0`` and ``tensorrt>=11.0.0,<11.1.0`` (read from the wheel's
METADATA); the project pins torch 2.13.0, so this path is for torch-tensorrt 2.13.x with
TensorRT 11.0 and therefore desktop targets only (JetPack 6 has TensorRT 10.3).
:func:`check_version_pair` refuses a mismatched pair before anything is compiled.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cotok_edge.bundle import atomic_write_bytes
from cotok_edge.bundle import sha256_of as sha256_file
from cotok_edge.contract import QUESTION_DECODER, VIDEO_ENCODER
from cotok_edge.model.vqa import CoTokVQA

from .onnx import (
    QuestionDecoderGraph,
    VideoEncoderGraph,
    eval_no_grad,
    trace_inputs,
)
from .targets import validate

SIDECAR_FORMAT = "cotok-torch-trt/1"
# Read from torch_tensorrt-2.13.0's wheel METADATA (Requires-Dist).
KNOWN_PAIRS = {
    "2.13": {"torch": ">=2.13.0,<2.14.0", "tensorrt": ">=11.0.0,<11.1.0"},
}
PIN = "torch-tensorrt==2.13.*"


def _minor(version: str) -> tuple[int, int]:
    m = re.match(r"^\s*(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return int(m.group(1)), int(m.group(2))


def check_version_pair(torch_version: str, torch_trt_version: str) -> None:
    """Raise ``ValueError`` unless torch and torch_tensorrt are the same minor release.

    Torch-TensorRT X.Y is built against torch X.Y (its wheels require ``torch>=X.Y,<X.Y+1``);
    another torch fails at import or, worse, at run time inside compiled graphs.
    """
    if _minor(torch_version) != _minor(torch_trt_version):
        t, tt = _minor(torch_version), _minor(torch_trt_version)
        raise ValueError(
            f"torch {torch_version} with torch_tensorrt {torch_trt_version}: Torch-TensorRT "
            f"{tt[0]}.{tt[1]} is built for torch {tt[0]}.{tt[1]}.x; install "
            f"torch-tensorrt=={t[0]}.{t[1]}.* (this project pins {PIN})"
        )


def _is_quantized(model: nn.Module) -> bool:
    # ModelOpt inserts TensorQuantizer modules; their presence marks a QAT/PTQ model.
    return any("Quantizer" in type(m).__name__ for m in model.modules())


def compile_and_save(
    model: CoTokVQA,
    out_dir: str | Path,
    *,
    target: str = "desktop",
    precision: str = "fp32",
    batch: int = 1,
) -> dict[str, Any]:
    """Compile both graphs with Torch-TensorRT and save them as exported programs.

    Writes ``video_encoder.ep`` and ``question_decoder.ep`` (each atomically) plus
    ``torch_trt.json`` (versions, GPU, precision, input shapes, sha256). ``precision``:
    ``fp32``; ``fp16`` (the module is cast to half: explicit typing, so TensorRT keeps
    the model's dtypes); ``int8`` only for a model quantized with ModelOpt (QAT).
    Inputs are static ``[batch, ...]``.
    """
    t = validate(target, precision)
    if not t.has_gpu:
        raise ValueError(f"target {t.name!r} has no GPU; Torch-TensorRT needs one")
    try:
        import torch_tensorrt
    except ImportError as e:
        raise RuntimeError(
            f"torch_tensorrt is not installed (pip install '{PIN}', matching torch "
            f"{torch.__version__})"
        ) from e
    check_version_pair(torch.__version__, torch_tensorrt.__version__)
    if not torch.cuda.is_available():
        raise RuntimeError("Torch-TensorRT needs a CUDA GPU; none is visible")
    if precision == "int8" and not _is_quantized(model):
        raise ValueError("int8 needs a ModelOpt-quantized model (run QAT first)")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # A copy: the caller's model stays on its device and dtype.
    model = copy.deepcopy(model).to("cuda", dtype=dtype)
    ex = trace_inputs(model, batch)
    ex = {k: v.cuda() for k, v in ex.items()}
    names = list(model.stream_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    with eval_no_grad(model):
        video = model.encode_video({s: ex[s] for s in names})
        graphs = {
            VIDEO_ENCODER: (VideoEncoderGraph(model), tuple(ex[s] for s in names)),
            QUESTION_DECODER: (
                QuestionDecoderGraph(model),
                (*(video[s] for s in names), ex["question_ids"], ex["question_mask"]),
            ),
        }
        for name, (module, args) in graphs.items():
            compiled = torch_tensorrt.compile(
                module.eval(), ir="dynamo", arg_inputs=list(args), use_explicit_typing=True
            )
            path = out / f"{name}.ep"
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".ep")
            os.close(fd)
            try:
                torch_tensorrt.save(
                    compiled, tmp, output_format="exported_program", arg_inputs=list(args)
                )
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            files[path.name] = {
                "sha256": sha256_file(path),
                "inputs": [[list(a.shape), str(a.dtype)] for a in args],
            }
    import tensorrt

    major, minor = torch.cuda.get_device_capability(0)
    meta = {
        "format": SIDECAR_FORMAT,
        "target": t.name,
        "precision": precision,
        "batch": batch,
        "torch": torch.__version__,
        "torch_tensorrt": torch_tensorrt.__version__,
        "tensorrt": tensorrt.__version__,
        "gpu": {
            "name": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}",
        },
        "files": files,
        "load": "import torch_tensorrt; torch.export.load(path).module()(*inputs)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(out / "torch_trt.json", (json.dumps(meta, indent=2) + "\n").encode())
    return meta
