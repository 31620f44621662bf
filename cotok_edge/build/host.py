"""What a build records about where it ran: package versions, the CPU, the system."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["cpu_name", "host_info", "versions"]

#: The distributions whose versions a bundle records.
DISTRIBUTIONS = ("cotok-edge", "torch", "onnx", "onnxruntime", "nvidia-modelopt", "tensorrt")


def versions() -> dict[str, str]:
    """``{"python": ..., distribution: version}`` for those of :data:`DISTRIBUTIONS` installed."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
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


def host_info() -> dict[str, Any]:
    """``{"cpu", "cores", "system"}`` of this machine."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform()}
