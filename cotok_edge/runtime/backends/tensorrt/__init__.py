"""TensorRT, in one place: availability, version, GPU checks, plugin loading, build, run.

- this module: importing ``tensorrt`` (:func:`import_tensorrt`, one error type,
  :class:`TensorRTUnavailable`), version parsing and matching, the CUDA binding
  (pycuda, else cuda-python) and the GPU checks, loading the fused TokenLearner plugin
  library (:func:`load_plugin_library`), the command that rebuilds a bundle's engines;
- :mod:`.build`: build plans per TensorRT version and target, ``trtexec`` lines, engine
  building with the Python API and the engines' sidecar JSON;
- :mod:`.runtime`: :class:`~.runtime.TensorRTBackend`, the runtime's inference wrapper.

Thin on purpose and imported lazily: ``tensorrt`` and a CUDA binding exist only on
the device. Nothing here imports torch or onnx (the ONNX inspection helpers import
``onnx`` when called), so the on-device finish runs with TensorRT, numpy and this package.
Written against the TensorRT Python API documented for 10.3 (JetPack 6) and 11.x.
"""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cotok_edge.contract import PLUGIN_LIBRARY_FILE

from ...errors import BackendUnavailableError, PluginLibraryError

__all__ = [
    "Cuda",
    "TensorRTUnavailable",
    "check_gpu",
    "gpu_info",
    "import_tensorrt",
    "is_strongly_typed",
    "load_plugin_library",
    "parse_trt_version",
    "rebuild_command",
    "version_matches",
]


class TensorRTUnavailable(BackendUnavailableError):
    """TensorRT (or a GPU for it) is not present here; the message says what is missing."""


def import_tensorrt() -> Any:
    """``import tensorrt`` or raise :class:`TensorRTUnavailable` saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable(
            "the tensorrt Python package is not installed (JetPack ships it; on a desktop "
            "`pip install tensorrt`); build the engines on the device with "
            "finish_on_device.sh or its trtexec lines, or use backend='onnxruntime'"
        ) from e
    return tensorrt


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``; ``"11.4"`` -> ``(11, 4, 0)``."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def version_matches(version: str, wanted: str) -> bool:
    """Does TensorRT ``version`` satisfy a target entry like ``"10.3"`` or ``"11.x"``?"""
    major, minor, _ = parse_trt_version(version)
    w_major, _, w_minor = wanted.partition(".")
    if int(w_major) != major:
        return False
    return w_minor in ("x", "") or int(w_minor) == minor


def is_strongly_typed(version: str) -> bool:
    """TensorRT 11 and later build strongly typed networks only."""
    return parse_trt_version(version)[0] >= 11


def rebuild_command(bundle: str | Path) -> str:
    """The command that rebuilds the bundle's engines (and plugin) on this device."""
    if (Path(bundle) / "finish_on_device.sh").is_file():
        return f"bash {Path(bundle) / 'finish_on_device.sh'}"
    return f"python -m cotok_edge.build --finish {Path(bundle)}"


# CUDA --------------------------------------------------------------------------------
class Cuda:
    """The few CUDA calls TensorRT needs here, over pycuda or cuda-python (``cudart``).

    Raises :class:`TensorRTUnavailable` when neither is installed.
    """

    def __init__(self) -> None:
        self.kind = ""
        try:
            import pycuda.driver as cuda

            cuda.init()
            self._cuda = cuda
            self._ctx = cuda.Device(0).retain_primary_context()
            self.kind = "pycuda"
            return
        except ImportError:
            pass
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart
        except ImportError as e:
            raise TensorRTUnavailable(
                "backend 'tensorrt': neither pycuda nor cuda-python is installed "
                "(pip install pycuda)"
            ) from e
        self._rt = cudart
        self.kind = "cuda-python"

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> dict[str, Any] | None:
        """``{"name", "compute_capability": "major.minor"}`` of GPU 0, None if there is none."""
        try:
            if self.kind == "pycuda":
                dev = self._cuda.Device(0)
                major, minor = dev.compute_capability()
                return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
            prop = self._check(self._rt.cudaGetDeviceProperties(0))
            name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
            return {"name": name.rstrip("\0"), "compute_capability": f"{prop.major}.{prop.minor}"}
        except Exception:  # no device, or a broken driver: "no GPU" either way
            return None

    def compute_capability(self) -> tuple[int, int] | None:
        dev = self.device()
        if dev is None:
            return None
        major, minor = str(dev["compute_capability"]).split(".")
        return int(major), int(minor)

    def push(self) -> None:
        if self.kind == "pycuda":
            self._ctx.push()

    def pop(self) -> None:
        if self.kind == "pycuda":
            self._cuda.Context.pop()

    def stream(self) -> Any:
        if self.kind == "pycuda":
            return self._cuda.Stream()
        return self._check(self._rt.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle) if self.kind == "pycuda" else int(stream)

    def alloc(self, nbytes: int) -> Any:
        if self.kind == "pycuda":
            return self._cuda.mem_alloc(max(1, nbytes))
        return self._check(self._rt.cudaMalloc(max(1, nbytes)))

    def ptr(self, buf: Any) -> int:
        return int(buf)

    def htod(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        if self.kind == "pycuda":
            self._cuda.memcpy_htod_async(dst, src, stream)
        else:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(
                self._rt.cudaMemcpyAsync(int(dst), src.ctypes.data, src.nbytes, kind, stream)
            )

    def dtoh(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        if self.kind == "pycuda":
            self._cuda.memcpy_dtoh_async(dst, src, stream)
        else:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(
                self._rt.cudaMemcpyAsync(dst.ctypes.data, int(src), dst.nbytes, kind, stream)
            )

    def sync(self, stream: Any) -> None:
        if self.kind == "pycuda":
            stream.synchronize()
        else:
            self._check(self._rt.cudaStreamSynchronize(stream))


def gpu_info() -> dict[str, Any] | None:
    """Name and compute capability (``"8.7"``) of GPU 0; None without a GPU.

    Asks the CUDA binding TensorRT runs with (pycuda, else cuda-python); torch only
    when the caller has already imported it (the build on a GPU host): this never
    imports torch itself, so the on-device finish does not need it.
    """
    try:
        dev = Cuda().device()
        if dev is not None:
            return dev
    except TensorRTUnavailable:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability(0)
                name = torch.cuda.get_device_name(0)
                return {"name": name, "compute_capability": f"{major}.{minor}"}
        except Exception:  # a broken CUDA install means no usable GPU, not a crash
            return None
    return None


def check_gpu(target: Any, gpu: dict[str, Any] | None) -> None:
    """Raise if ``gpu`` is not one the target's engines are for (engines are not portable).

    ``target`` is a target name or ``cotok_edge.export.targets.Target``.
    """
    from cotok_edge.export.targets import get_target

    t = get_target(target)
    if gpu is None:
        raise TensorRTUnavailable(f"no CUDA GPU found; target {t.name!r} engines need {t.gpu_arch}")
    major, minor = (int(x) for x in str(gpu["compute_capability"]).split("."))
    ok = (major, minor) in t.compute_capabilities
    if t.gpu_arch == "sm_80+":
        ok = (major, minor) >= (8, 0)
    if not ok:
        raise ValueError(
            f"GPU {gpu.get('name')} (compute capability {major}.{minor}) is not a "
            f"{t.gpu_arch} GPU of target {t.name!r}: build the engine on the device itself"
        )


# The plugin --------------------------------------------------------------------------
def load_plugin_library(trt: Any, path: str | Path, logger: Any = None) -> Any:
    """Register TensorRT's standard plugins and the fused TokenLearner plugin library.

    1. ``ctypes.CDLL`` (``RTLD_GLOBAL``), so a missing dependency is named in the error;
    2. the library's ``cotokPluginTensorRTVersion()``: it must have been compiled against
       the headers of this TensorRT's major version (``ILoggerFinder`` changed layout
       between 10.x and 11.x, so a mismatch would crash inside TensorRT);
    3. ``IPluginRegistry.load_library``, which registers the IPluginV3 creators its
       ``getCreators`` returns (a plain ``CDLL`` does not).

    Returns the registry's handle. Raises :class:`PluginLibraryError` naming the file.
    """
    p = Path(path)
    how = (
        f"build it on this device (cmake -S plugins -B build && cmake --build build, then "
        f"copy build/{PLUGIN_LIBRARY_FILE} there; finish_on_device.sh does it)"
    )
    if not p.is_file():
        raise PluginLibraryError(f"TensorRT plugin library {p} is missing: {how}")
    try:
        lib = ctypes.CDLL(str(p), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise PluginLibraryError(f"TensorRT plugin library {p} does not load ({e}): {how}") from e
    built = getattr(lib, "cotokPluginTensorRTVersion", None)
    if built is not None:
        built.restype = ctypes.c_int32
        headers = int(built())
        major = parse_trt_version(trt.__version__)[0]
        if headers // 10000 != major:
            raise PluginLibraryError(
                f"TensorRT plugin library {p} was compiled against TensorRT "
                f"{headers // 10000}.{headers // 100 % 100} headers, this is TensorRT "
                f"{trt.__version__}: {how}"
            )
    trt.init_libnvinfer_plugins(logger, "")
    handle = trt.get_plugin_registry().load_library(str(p))
    if handle is None:
        raise PluginLibraryError(f"TensorRT could not register the plugins in {p}: {how}")
    return handle
