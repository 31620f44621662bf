"""The ONNX Runtime backend: the one session wrapper for the exported graphs.

Used by the runtime (``load(..., backend="onnxruntime")``) to answer, and by the
build to measure parity (``cotok_edge.export.ort.OrtChain`` and
``cotok_edge.export.scoring.ort_predictions`` run their graphs through it), so the
build's parity numbers come from the code that ships.

``onnxruntime`` is imported when a backend is built, not when this module is.
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
    QUESTION_DECODER_EXPLAIN,
    QUESTION_IDS,
    QUESTION_MASK,
    VIDEO_ENCODER,
    is_feature_name,
    maps_name,
)
from cotok_edge.manifest import Manifest

from ..errors import BackendUnavailableError, BundleError, ExplainUnavailableError
from .base import Backend, DecodeResult, Features, LoadOptions, importable

__all__ = ["OnnxRuntimeBackend", "bundle_graph", "ort_providers"]


def bundle_graph(root: Path, manifest: Manifest, key: str) -> str:
    """The file of graph ``key`` the bundle must have; :class:`BundleError` if it has none."""
    f = manifest.graph_file(key)
    if f is None:
        raise BundleError(f"bundle {root}: manifest lists no {key} graph (onnx.graphs.{key})")
    return f


def ort_providers(requested: Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers to use: ``requested`` (those available), else
    CUDA when this onnxruntime build has it, then CPU.

    The TensorRT execution provider is used only when asked for explicitly: it builds
    engines when the session is created (minutes on a Jetson), which the bundle's own
    engine and the ``tensorrt`` backend already cover.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime providers {missing} are not available here (available: {available})"
            )
        return list(requested)
    out = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*out, "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """``video_encoder.onnx`` + ``question_decoder.onnx`` (and ``question_decoder_explain.onnx``
    for maps) with ONNX Runtime.

    Thread safety: no lock. ``InferenceSession.run`` is thread-safe (ONNX Runtime
    documents concurrent ``Run`` calls on one session), and nothing else is mutated
    per call; the explain session is created once, under a lock, on first use.

    ``stream_names`` None: the encoder graph's inputs, in order. :meth:`run_decoder`
    returns every output of the decoder by name (``answer_logits`` too): what the
    build's parity scoring reads.
    """

    name = "onnxruntime"
    thread_safety = "no lock: InferenceSession.run is thread-safe"

    def __init__(
        self,
        stream_names: Sequence[str] | None,
        encoder: str | Path,
        decoder: str | Path,
        explain: str | Path | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        spin: bool = False,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(
                "backend 'onnxruntime': the onnxruntime package is not installed "
                "(pip install onnxruntime)"
            ) from e
        self._ort = ort
        self.providers = ort_providers(providers)
        self._opts = ort.SessionOptions()
        if threads is not None:
            self._opts.intra_op_num_threads = int(threads)
        # Idle worker threads busy-wait for the next op by default. Between this
        # runtime's many small decoder ops that wait steals the cores the work needs:
        # measured on 2 cores, not spinning cut inference by 26-29% (benchmarks/records.md).
        self._opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._opts.log_severity_level = 3  # errors only: no provider notices on stderr
        self.encoder = self._session(encoder)
        self.decoder = self._session(decoder)
        if stream_names is None:
            stream_names = [i.name for i in self.encoder.get_inputs()]
        super().__init__(stream_names)
        self._explain_path = None if explain is None else Path(explain)
        self._explain: Any = None
        self._explain_lock = threading.Lock()
        self.supports_maps = self._explain_path is not None
        self._enc_out = [o.name for o in self.encoder.get_outputs()]
        self.decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        self.decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        ids_in = next((i for i in self.decoder.get_inputs() if i.name == QUESTION_IDS), None)
        if ids_in is None:
            raise BundleError(f"{decoder}: the question decoder graph has no {QUESTION_IDS} input")
        #: L, the question length the decoder graph takes.
        self.question_tokens = int(ids_in.shape[1])

    # Registry hooks ----------------------------------------------------------------
    @classmethod
    def unavailable(cls) -> str | None:
        return None if importable("onnxruntime") else "not installed"

    @classmethod
    def from_bundle(
        cls, root: Path, manifest: Manifest, options: LoadOptions
    ) -> OnnxRuntimeBackend:
        enc = bundle_graph(root, manifest, VIDEO_ENCODER)
        dec = bundle_graph(root, manifest, QUESTION_DECODER)
        exp = manifest.graph_file(QUESTION_DECODER_EXPLAIN)
        verify_files(root, manifest, [enc, dec] + ([exp] if exp else []))
        return cls(
            manifest.stream_names, root / enc, root / dec, None if exp is None else root / exp,
            providers=options.providers, threads=options.threads, spin=options.spin,
        )  # fmt: skip

    def _session(self, path: str | Path) -> Any:
        return self._ort.InferenceSession(str(path), self._opts, providers=self.providers)

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)})"

    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {s: np.ascontiguousarray(streams[s], dtype=np.uint8) for s in self.stream_names}
        outs = self.encoder.run(None, feeds)
        return dict(zip(self._enc_out, outs, strict=True))

    def _explain_session(self) -> Any:
        if self._explain_path is None:
            raise ExplainUnavailableError(
                "this bundle has no question_decoder_explain.onnx: rebuild it with "
                "explanations (python -m cotok_edge.build ...) to explain answers"
            )
        with self._explain_lock:
            if self._explain is None:
                self._explain = self._session(self._explain_path)
        return self._explain

    def _decoder_feeds(
        self, features: Mapping[str, np.ndarray], ids: np.ndarray, mask: np.ndarray
    ) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {
            k: np.ascontiguousarray(features[k], dtype=np.float32)
            for k in self.decoder_inputs
            if is_feature_name(k)
        }
        feeds[QUESTION_IDS] = np.ascontiguousarray(ids, dtype=np.int64)
        feeds[QUESTION_MASK] = np.ascontiguousarray(mask, dtype=bool)
        return feeds

    def run_decoder(
        self, features: Mapping[str, np.ndarray], ids: np.ndarray, mask: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Every output of the decoder graph by name (``answer_ids [B, A]``,
        ``answer_scores [B]`` and, if the graph has it, ``answer_logits [B, A, V]``)."""
        outs = self.decoder.run(None, self._decoder_feeds(features, ids, mask))
        return dict(zip(self.decoder_outputs, outs, strict=True))

    def decode(
        self, features: Features, ids: np.ndarray, mask: np.ndarray, maps: bool = False
    ) -> DecodeResult:
        session = self._explain_session() if maps else self.decoder
        feeds = self._decoder_feeds(features, ids, mask)
        names = [ANSWER_IDS, ANSWER_SCORES]
        if maps:
            names += [maps_name(s) for s in self.stream_names]
        outs = session.run(names, feeds)
        found = {s: outs[2 + i] for i, s in enumerate(self.stream_names)} if maps else None
        return DecodeResult(outs[0].astype(np.int64), outs[1].astype(np.float32), found)
