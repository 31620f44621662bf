"""Export path: targets, ONNX export and checks, ONNX Runtime parity, TensorRT engines.

Installed as ``cotok_edge.export``. Submodules import their heavy dependencies
themselves, so importing this package needs neither onnx nor TensorRT:

- :mod:`.targets`: the target table, ``get_target``, ``validate``;
- :mod:`.onnx`: ``export_model`` (video_encoder + question_decoder graphs), the graph modules;
- :mod:`.checks`: ``check_model`` (checker, shape inference, TensorRT operator table);
- :mod:`.ort`: ``OrtChain`` and ``parity`` (ONNX Runtime vs PyTorch);
- :mod:`.tensorrt`: ``plan_build``, ``trtexec_argv``, ``build_engine`` and the sidecar JSON;
- :mod:`.torch_trt`: Torch-TensorRT AOT compile, saved as exported programs.
"""

from .targets import PRECISIONS, TARGETS, Target, get_target, target_names, validate

__all__ = ["PRECISIONS", "TARGETS", "Target", "get_target", "target_names", "validate"]
