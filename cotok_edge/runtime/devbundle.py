"""A minimal FP32 CPU bundle from a model in memory, for tests and benchmarks.

The real bundles come from ``python -m cotok_edge.build`` (QAT, parity checks, engines,
report); this writes only what the runtime reads: the ONNX graphs (with the explain
variant), ``tokenizer.json``, ``checkpoint/`` and ``manifest.json``. Imports torch and
the exporter (inside the function): never used by the runtime itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cotok_edge.bundle import Manifest, write_manifest

__all__ = ["write_dev_bundle"]


def write_dev_bundle(
    model: Any,
    out: str | Path,
    tokenizer: str | Path | None = None,
    *,
    explain: bool = True,
) -> Manifest:
    """Export ``model`` (a ``CoTokVQA``) into the empty or new folder ``out``; return the manifest.

    ``tokenizer``: the ``tokenizer.json`` to ship (default: the shipped model's).
    """
    import onnx
    import onnxruntime
    import torch

    from cotok_edge.export.onnx import export_model
    from cotok_edge.model.vqa import DEFAULT_CHECKPOINT

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = export_model(model, out, target="cpu", explain=explain)
    shutil.copyfile(
        Path(tokenizer or DEFAULT_CHECKPOINT / "tokenizer.json"), out / "tokenizer.json"
    )
    model.save_pretrained(out / "checkpoint")
    manifest = Manifest(
        target="cpu",
        precision="fp32",
        model_config=model.config.to_dict(),
        onnx=spec,
        tokenizer="tokenizer.json",
        checkpoint="checkpoint/",
        versions={
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )
    return write_manifest(out, manifest)
