"""Export path: targets, ONNX export and checks, ONNX Runtime parity, report.

Installed as ``cotok_edge.export``. Submodules import their heavy dependencies
themselves, so importing this package needs neither onnx nor TensorRT. TensorRT engine
building lives with the rest of TensorRT, in :mod:`cotok_edge.runtime.backends.tensorrt`.

- :mod:`.targets`: the target table, ``get_target``, ``validate``;
- :mod:`.onnx`: ``export_model`` (video_encoder + question_decoder graphs), the graph modules;
- :mod:`.checks`: ``check_model`` (checker, shape inference, TensorRT operator table);
- :mod:`.ort`: ``OrtChain`` (a parity view of the runtime's ONNX Runtime backend) and
  ``parity`` (ONNX Runtime vs PyTorch);
- :mod:`.torch_trt`: Torch-TensorRT AOT compile, saved as exported programs.
"""

from .targets import PRECISIONS, TARGETS, Target, get_target, target_names, validate

__all__ = ["PRECISIONS", "TARGETS", "Target", "get_target", "target_names", "validate"]
