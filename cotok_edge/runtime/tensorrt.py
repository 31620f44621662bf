"""TensorRT backend: the bundle's serialized engine(s), run with the TensorRT 10.x Python API.

Thin on purpose, and imported lazily: ``tensorrt`` and a CUDA binding (``pycuda``, else
``cuda-python``) exist only on the device. What it does:

1. check the engine's recorded TensorRT version and compute capability against this
   device (:func:`check_engine_compat`, pure, so it is tested without TensorRT); an
   engine is tied to both, and the error says to rebuild on this device, with the
   command;
2. load the fused TokenLearner plugin library (``ctypes.CDLL`` with ``RTLD_GLOBAL`` so
   a missing dependency is reported by name, then ``IPluginRegistry.load_library``,
   which is what registers IPluginV3 creators);
3. ``IRuntime.deserialize_cuda_engine``; one ``IExecutionContext`` and CUDA stream per
   calling thread (contexts are not thread-safe; the engine is), device buffers per
   thread, grown as needed; ``set_input_shape``/``set_tensor_address`` and
   ``execute_async_v3``.

The manifest's ``engine`` entry is :class:`cotok_edge.manifest.EngineInfo` (the engine
files, TensorRT version, compute capability, plugin library). Each engine's role comes from its
I/O tensor names: stream inputs (``s1``...) make a video encoder, ``question_ids`` a
question decoder, both a fused engine. A half with no engine (e.g. a decoder-only
engine) runs its ONNX graph with ONNX Runtime instead, and ``describe()`` says so.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotok_edge.contract import (
    ANSWER_IDS,
    ANSWER_SCORES,
    QUESTION_DECODER,
    QUESTION_IDS,
    QUESTION_MASK,
    VIDEO_ENCODER,
    is_feature_name,
)
from cotok_edge.manifest import EngineInfo, Manifest

from .backends import Backend, DecodeResult, OnnxRuntimeBackend
from .errors import (
    BackendUnavailableError,
    EngineMismatchError,
    ExplainUnavailableError,
    PluginLibraryError,
)

__all__ = [
    "TensorRTBackend",
    "check_engine_compat",
    "plugin_library_path",
    "rebuild_command",
]

NOT_INSTALLED = "TensorRT not installed"


def _version_tuple(version: str) -> tuple[int, ...]:
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not m:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return tuple(int(x) for x in m.groups(default="0"))


def rebuild_command(bundle: str | Path) -> str:
    """The command that rebuilds the bundle's engines (and plugin) on this device."""
    if (Path(bundle) / "finish_on_device.sh").is_file():
        return f"bash {Path(bundle) / 'finish_on_device.sh'}"
    return f"python -m cotok_edge.build --finish {Path(bundle)}"


def check_engine_compat(
    engine: EngineInfo,
    tensorrt_version: str,
    compute_capability: tuple[int, int] | None,
    *,
    bundle: str | Path,
) -> None:
    """Raise :class:`EngineMismatchError` unless the engine was built with this TensorRT
    (major.minor.patch) for this GPU's compute capability.

    ``engine`` is the manifest's ``engine`` entry; ``compute_capability`` is this device's
    (None: no CUDA GPU found).
    """
    built_v = engine.tensorrt
    built_cc = engine.compute_capability
    problems = []
    try:
        if _version_tuple(built_v) != _version_tuple(tensorrt_version):
            problems.append(f"TensorRT {built_v} (this device has {tensorrt_version})")
    except ValueError:
        problems.append(f"an unreadable TensorRT version {built_v!r}")
    if compute_capability is None:
        problems.append("a CUDA GPU (none found here)")
    elif built_cc is None or tuple(int(x) for x in built_cc) != tuple(compute_capability):
        want = "unknown" if built_cc is None else ".".join(str(int(x)) for x in built_cc)
        have = ".".join(str(x) for x in compute_capability)
        problems.append(f"compute capability {want} (this GPU is {have})")
    if problems:
        raise EngineMismatchError(
            f"bundle {bundle}: {engine.describe()} was built for "
            f"{' and '.join(problems)}; engines are not portable: rebuild on this device: "
            f"{rebuild_command(bundle)}"
        )


def plugin_library_path(bundle: str | Path, engine: EngineInfo) -> Path | None:
    """The plugin library an engine needs, checked to exist; None if it needs none."""
    rel = engine.plugin_library
    if not rel:
        return None
    path = Path(bundle) / rel
    if not path.is_file():
        raise PluginLibraryError(
            f"bundle {bundle}: the engine needs the TensorRT plugin library {rel}, which is "
            f"missing; build it on this device (cmake -S {Path(bundle) / 'plugins'} -B build "
            f"&& cmake --build build, then copy the library to {path}) or rebuild the bundle"
        )
    return path


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'tensorrt': {NOT_INSTALLED} (it ships with JetPack; on a desktop "
            "pip install tensorrt); use backend='onnxruntime'"
        ) from e
    return tensorrt


class _Cuda:
    """The few CUDA calls the backend needs, over pycuda or cuda-python (``cudart``)."""

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
            raise BackendUnavailableError(
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

    def compute_capability(self) -> tuple[int, int] | None:
        try:
            if self.kind == "pycuda":
                return tuple(self._cuda.Device(0).compute_capability())  # type: ignore[return-value]
            prop = self._check(self._rt.cudaGetDeviceProperties(0))
            return int(prop.major), int(prop.minor)
        except Exception:
            return None

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


class _Engine:
    """One deserialized engine: its I/O, and per-thread contexts, streams and buffers."""

    def __init__(self, trt: Any, runtime: Any, path: Path, cuda: _Cuda, on_fail: str):
        self.trt, self.cuda, self.path = trt, cuda, path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(
                f"{path}: TensorRT could not deserialize the engine (built with another "
                f"TensorRT version or for another GPU?); rebuild on this device: {on_fail}"
            )
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_in else self.outputs).append(name)
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        self._local = threading.local()

    def _state(self) -> Any:
        st = self._local
        if not hasattr(st, "context"):
            st.context = self.engine.create_execution_context()
            st.stream = self.cuda.stream()
            st.buffers = {}  # name -> (device buffer, capacity in bytes)
        return st

    def _buffer(self, st: Any, name: str, nbytes: int) -> Any:
        buf, cap = st.buffers.get(name, (None, -1))
        if cap < nbytes:
            buf = self.cuda.alloc(nbytes)
            st.buffers[name] = (buf, nbytes)
        return buf

    def run(self, feeds: Mapping[str, np.ndarray], wanted: Sequence[str]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (the named outputs)."""
        self.cuda.push()
        try:
            st = self._state()
            ctx, stream = st.context, st.stream
            hosts = {}
            for name in self.inputs:
                arr = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
                hosts[name] = arr
                ctx.set_input_shape(name, tuple(arr.shape))
                buf = self._buffer(st, name, arr.nbytes)
                self.cuda.htod(buf, arr, stream)
                ctx.set_tensor_address(name, self.cuda.ptr(buf))
            results = {}
            for name in self.outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                out = np.empty(shape, dtype=self.dtypes[name])
                buf = self._buffer(st, name, out.nbytes)
                ctx.set_tensor_address(name, self.cuda.ptr(buf))
                results[name] = (out, buf)
            if not ctx.execute_async_v3(self.cuda.stream_handle(stream)):
                raise RuntimeError(f"{self.path}: TensorRT execute_async_v3 failed")
            for name in wanted:
                out, buf = results[name]
                self.cuda.dtoh(out, buf, stream)
            self.cuda.sync(stream)
            return {name: results[name][0] for name in wanted}
        finally:
            self.cuda.pop()


class TensorRTBackend(Backend):
    """The bundle's TensorRT engine(s). See the module docstring.

    Thread safety: one execution context, CUDA stream and set of device buffers per
    calling thread (``threading.local``), created on the thread's first call; the
    engine is shared. No lock.
    """

    name = "tensorrt"
    thread_safety = "per-thread execution context, CUDA stream and buffers"
    supports_maps = False

    def __init__(
        self,
        stream_names: Sequence[str],
        bundle: str | Path,
        manifest: Manifest,
        *,
        onnx_files: Mapping[str, Path] | None = None,
    ):
        super().__init__(stream_names)
        engine = manifest.engine
        if engine is None:
            raise BackendUnavailableError(
                f"backend 'tensorrt': bundle {bundle} has no TensorRT engine (it was built on a "
                f"host without the target GPU); finish it on the device: "
                f"{rebuild_command(bundle)}"
            )
        files = list(engine.files.values())
        plugin = plugin_library_path(bundle, engine)
        trt = _import_tensorrt()
        self._cuda = _Cuda()
        check_engine_compat(
            engine, trt.__version__, self._cuda.compute_capability(),
            bundle=bundle,
        )  # fmt: skip
        self.version = trt.__version__
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        if plugin is not None:
            try:
                ctypes.CDLL(str(plugin), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise PluginLibraryError(
                    f"bundle {bundle}: plugin library {plugin} does not load ({e}); rebuild it "
                    f"on this device or rebuild the bundle: {rebuild_command(bundle)}"
                ) from e
            if trt.get_plugin_registry().load_library(str(plugin)) is None:
                raise PluginLibraryError(
                    f"bundle {bundle}: TensorRT could not register the plugins in {plugin}"
                )
        runtime = trt.Runtime(logger)
        self._runtime = runtime
        cmd = rebuild_command(bundle)
        self.encoder: _Engine | None = None
        self.decoder: _Engine | None = None
        self.fused: _Engine | None = None
        for rel in files:
            eng = _Engine(trt, runtime, Path(bundle) / rel, self._cuda, cmd)
            has_video = any(s in eng.inputs for s in self.stream_names)
            has_question = QUESTION_IDS in eng.inputs
            if has_video and has_question:
                self.fused = eng
            elif has_video:
                self.encoder = eng
            elif has_question:
                self.decoder = eng
            else:
                raise BundleEngineIOError(f"{rel}: engine inputs {eng.inputs} are not the model's")
        self._ort: OnnxRuntimeBackend | None = None
        if self.fused is None and (self.encoder is None or self.decoder is None):
            if not onnx_files:
                raise BackendUnavailableError(
                    f"backend 'tensorrt': bundle {bundle}'s engines cover only part of the model"
                )
            # The half without an engine runs its ONNX graph (CUDA provider where present).
            self._ort = OnnxRuntimeBackend(
                stream_names, onnx_files[VIDEO_ENCODER], onnx_files[QUESTION_DECODER]
            )

    def describe(self) -> str:
        parts = [f"tensorrt {self.version} ({self._cuda.kind})"]
        if self._ort is not None:
            half = "video encoder" if self.encoder is None else "question decoder"
            parts.append(f"{half} on {self._ort.describe()}")
        return "; ".join(parts)

    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fused is not None:
            # A fused engine takes the streams with the question: keep them for decode.
            return {f"raw_{s}": np.asarray(streams[s]) for s in self.stream_names}
        if self.encoder is None:
            assert self._ort is not None
            return self._ort.encode(streams)
        return self.encoder.run(streams, self.encoder.outputs)

    def decode(
        self,
        features: Mapping[str, np.ndarray],
        ids: np.ndarray,
        mask: np.ndarray,
        maps: bool = False,
    ) -> DecodeResult:
        if maps:
            raise ExplainUnavailableError(
                "the tensorrt backend does not produce explanations (its engine has no "
                "TokenLearner maps); use backend='onnxruntime' or backend='torch' to explain"
            )
        wanted = [ANSWER_IDS, ANSWER_SCORES]
        if self.fused is not None:
            feeds = {s: features[f"raw_{s}"] for s in self.stream_names}
            feeds.update({QUESTION_IDS: ids, QUESTION_MASK: mask})
            out = self.fused.run(feeds, wanted)
        elif self.decoder is None:
            assert self._ort is not None
            return self._ort.decode(features, ids, mask)
        else:
            feeds = {k: v for k, v in features.items() if is_feature_name(k)}
            feeds.update({QUESTION_IDS: ids, QUESTION_MASK: mask})
            out = self.decoder.run(feeds, wanted)
        return DecodeResult(out[ANSWER_IDS].astype(np.int64), out[ANSWER_SCORES].astype(np.float32))


class BundleEngineIOError(EngineMismatchError):
    """An engine whose inputs are neither the video encoder's nor the question decoder's."""
