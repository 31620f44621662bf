"""Turn a checkpoint into a verified deployment bundle for a target.

    python -m cotok_edge.build --target jetson-orin [--precision int8|fp16|fp32]
        [--checkpoint DIR] [--out DIR] [--force] [--calib-data DIR] [--qat-steps N]
        [--plugin/--no-plugin]
    python -m cotok_edge.build --finish BUNDLE      (on the device; torch-free)
    python -m cotok_edge.build --verify BUNDLE [--backend auto|tensorrt|onnxruntime|torch]

Modules:

- :mod:`.cli`: the argument table, its validation (every argument checked before any
  work) and ``main``;
- :mod:`.stages`: one function per stage (load, export FP32, calibrate/QAT, export INT8,
  score, write the bundle), each returning a typed result, and ``build``;
- :mod:`.parity`: the parity bars (values and labels, defined once), the parity slice's
  clips and the build-time answers;
- :mod:`.finish`: the on-device finish (engines with TensorRT's Python API, then
  ``--verify`` with the runtime's TensorRT backend); imports no torch;
- :mod:`.host`: versions, CPU and system a build records (``cpu_name`` is what the
  benchmarks use).

Exit status: 0 built (parity bars met), 1 built but a parity bar was missed (the report
says which; ``--strict`` turns that into no bundle at all), 2 bad arguments.
"""

from __future__ import annotations

# Each module imports torch and the exporter inside the functions that need them, so
# importing this package (as the on-device finish does) needs neither.
from .cli import main, parse_args
from .stages import build

__all__ = ["build", "main", "parse_args"]
