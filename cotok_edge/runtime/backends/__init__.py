"""Inference backends, one home each, and the registry ``runtime.load`` picks from.

- :mod:`.base`: :class:`Backend` (encode / decode, and the registry hooks
  ``unavailable``, ``skip_reason``, ``from_bundle``), :class:`DecodeResult`, :class:`LoadOptions`;
- :mod:`.tensorrt`: everything TensorRT (availability, version, GPU checks, plugin
  loading, engine building in :mod:`.tensorrt.build`, the runtime wrapper in
  :mod:`.tensorrt.runtime`);
- :mod:`.onnxruntime`: the one ONNX Runtime session wrapper, used by the runtime and
  by the build's parity scoring;
- :mod:`.pytorch`: the FP32 checkpoint with PyTorch.

Everything before inference (video decoding, stream sampling, tokenising) and after
(detokenising) is shared, in :mod:`cotok_edge.runtime.api`. Importing this package
imports neither torch, onnxruntime nor tensorrt: each backend imports what it needs
when it is built.
"""

from __future__ import annotations

from .base import Backend, DecodeResult, LoadOptions
from .onnxruntime import OnnxRuntimeBackend, ort_providers
from .pytorch import TorchBackend
from .tensorrt.runtime import TensorRTBackend

__all__ = [
    "REGISTRY",
    "Backend",
    "DecodeResult",
    "LoadOptions",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "ort_providers",
]

#: The backends by name, in the order ``auto`` tries them (fastest first).
REGISTRY: dict[str, type[Backend]] = {
    TensorRTBackend.name: TensorRTBackend,
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
    TorchBackend.name: TorchBackend,
}
