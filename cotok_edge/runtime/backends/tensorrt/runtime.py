"""TensorRT backend: the bundle's serialized engine(s), run with the TensorRT Python API.

Thin on purpose, and imported lazily: ``tensorrt`` and a CUDA binding (``pycuda``, else
``cuda-python``) exist only on the device. Uses the calls documented for TensorRT 10.x
and 11.x alike (``execute_async_v3``, named I/O tensors). What it does:

1. check the engine's recorded TensorRT version and compute capability against this
   device (:func:`check_engine_compat`, pure, so it is tested without TensorRT); an
   engine is tied to both, and the error says to rebuild on this device, with the
   command;
2. load the fused TokenLearner plugin library (:func:`~.load_plugin_library`);
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

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotok_edge.bundle import verify_files
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

from ...errors import (
    BackendUnavailableError,
    EngineMismatchError,
    ExplainUnavailableError,
    PluginLibraryError,
)
from ..base import Backend, DecodeResult, Features, LoadOptions, importable
from ..onnxruntime import OnnxRuntimeBackend, bundle_graph
from . import Cuda, import_tensorrt, load_plugin_library, parse_trt_version, rebuild_command

__all__ = [
    "BundleEngineIOError",
    "TensorRTBackend",
    "check_engine_compat",
    "plugin_library_path",
]


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
        if parse_trt_version(built_v) != parse_trt_version(tensorrt_version):
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


class _Engine:
    """One deserialized engine: its I/O, and per-thread contexts, streams and buffers."""

    def __init__(self, trt: Any, runtime: Any, path: Path, cuda: Cuda, on_fail: str):
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

    @classmethod
    def unavailable(cls) -> str | None:
        return None if importable("tensorrt") else "TensorRT not installed"

    @classmethod
    def skip_reason(cls, manifest: Manifest) -> str | None:
        return "no engine in the bundle" if manifest.engine is None else None

    @classmethod
    def from_bundle(cls, root: Path, manifest: Manifest, options: LoadOptions) -> TensorRTBackend:
        enc = bundle_graph(root, manifest, VIDEO_ENCODER)
        dec = bundle_graph(root, manifest, QUESTION_DECODER)
        if manifest.engine is not None:
            verify_files(root, manifest, [*manifest.engine.files.values(), enc, dec])
        return cls(
            manifest.stream_names, root, manifest,
            onnx_files={VIDEO_ENCODER: root / enc, QUESTION_DECODER: root / dec},
        )  # fmt: skip

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
        trt = import_tensorrt()
        self._cuda = Cuda()
        check_engine_compat(
            engine, trt.__version__, self._cuda.compute_capability(),
            bundle=bundle,
        )  # fmt: skip
        self.version = trt.__version__
        logger = trt.Logger(trt.Logger.WARNING)
        if plugin is not None:
            try:
                load_plugin_library(trt, plugin, logger)
            except PluginLibraryError as e:
                raise PluginLibraryError(
                    f"bundle {bundle}: {e}; or rebuild the bundle's engines: "
                    f"{rebuild_command(bundle)}"
                ) from None
        else:
            trt.init_libnvinfer_plugins(logger, "")
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
        self, features: Features, ids: np.ndarray, mask: np.ndarray, maps: bool = False
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
