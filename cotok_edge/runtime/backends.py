"""Inference backends: the only part of the runtime that differs between them.

A backend runs the two halves of the model on numpy arrays:

- ``encode(streams)``: ``{s: uint8 [C, 3, T_s, H_s, W_s]}`` -> ``{"v_s": float32 [C, N_s, d]}``
  (the question-independent video encoder, run once per clip);
- ``decode(features, ids, mask, maps)``: ``{"v_s": [B, N_s, d]}``, ``question_ids [B, L]``
  int64, ``question_mask [B, L]`` bool -> :class:`DecodeResult` (answer ids ``[B, A]``,
  scores ``[B]`` and, with ``maps``, the TokenLearner maps ``{s: [B, K, S, N_s]}``).

Everything before (video decoding, stream sampling, tokenising) and after (detokenising)
is shared, in :mod:`cotok_edge.runtime.api`. This module imports neither torch nor
onnxruntime at import time; each backend imports what it needs when it is built.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotok_edge.contract import (
    ANSWER_IDS,
    ANSWER_SCORES,
    QUESTION_IDS,
    QUESTION_MASK,
    feature_name,
    is_feature_name,
    maps_name,
)

from .errors import BackendUnavailableError, ExplainUnavailableError

__all__ = ["Backend", "DecodeResult", "OnnxRuntimeBackend", "TorchBackend", "ort_providers"]


@dataclass
class DecodeResult:
    """What ``Backend.decode`` returns (numpy arrays, batch ``B``).

    ids: int64 ``[B, A]`` greedy answer tokens, ``pad_id`` after ``[EOS]``.
    scores: float32 ``[B]`` mean log-probability of the tokens up to and including EOS.
    maps: ``{stream: float32 [B, K, S, N_s]}`` TokenLearner maps, when asked for.
    """

    ids: np.ndarray
    scores: np.ndarray
    maps: dict[str, np.ndarray] | None = None


class Backend(ABC):
    """One way of running the exported model. Subclasses set the class attributes.

    name: ``tensorrt`` | ``onnxruntime`` | ``torch``.
    thread_safety: one line saying how concurrent calls are handled.
    supports_maps: whether ``decode(..., maps=True)`` works.
    """

    name: str = ""
    thread_safety: str = ""
    supports_maps: bool = False

    def __init__(self, stream_names: Sequence[str]):
        self.stream_names = list(stream_names)

    @abstractmethod
    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 ``{s: [C, 3, T_s, H_s, W_s]}`` -> float32 ``{"v_s": [C, N_s, d]}``."""

    @abstractmethod
    def decode(
        self,
        features: Mapping[str, np.ndarray],
        ids: np.ndarray,
        mask: np.ndarray,
        maps: bool = False,
    ) -> DecodeResult:
        """``{"v_s": [B, N_s, d]}``, ``ids [B, L]`` int64, ``mask [B, L]`` bool -> answers."""

    def describe(self) -> str:
        """One line for logs: the backend and what it runs on."""
        return self.name


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
    """

    name = "onnxruntime"
    thread_safety = "no lock: InferenceSession.run is thread-safe"

    def __init__(
        self,
        stream_names: Sequence[str],
        encoder: str | Path,
        decoder: str | Path,
        explain: str | Path | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        spin: bool = False,
    ):
        super().__init__(stream_names)
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
        self._explain_path = None if explain is None else Path(explain)
        self._explain: Any = None
        self._explain_lock = threading.Lock()
        self.supports_maps = self._explain_path is not None
        self._enc_out = [o.name for o in self.encoder.get_outputs()]
        self._dec_in = [i.name for i in self.decoder.get_inputs()]

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

    def decode(
        self,
        features: Mapping[str, np.ndarray],
        ids: np.ndarray,
        mask: np.ndarray,
        maps: bool = False,
    ) -> DecodeResult:
        session = self._explain_session() if maps else self.decoder
        feeds: dict[str, np.ndarray] = {
            k: np.ascontiguousarray(features[k], dtype=np.float32)
            for k in self._dec_in
            if is_feature_name(k)
        }
        feeds[QUESTION_IDS] = np.ascontiguousarray(ids, dtype=np.int64)
        feeds[QUESTION_MASK] = np.ascontiguousarray(mask, dtype=bool)
        names = [ANSWER_IDS, ANSWER_SCORES]
        if maps:
            names += [maps_name(s) for s in self.stream_names]
        outs = session.run(names, feeds)
        found = {s: outs[2 + i] for i, s in enumerate(self.stream_names)} if maps else None
        return DecodeResult(outs[0].astype(np.int64), outs[1].astype(np.float32), found)


class TorchBackend(Backend):
    """The bundle's PyTorch checkpoint (``checkpoint/``), on CPU or CUDA.

    Decoding is the exported graph's own function (``greedy_unrolled``, stopping once
    every answer has ended): greedy, ``pad_id`` after ``[EOS]``, scores the mean
    log-probability of the tokens up to and including EOS, so its answers match the ONNX
    backends' token for token (FP32 bundles).

    Thread safety: one lock around each call. The model holds no per-call state, but
    concurrent torch calls each spin up the intra-op thread pool and slow one another
    down on a small device; serialising them costs nothing in throughput there.
    """

    name = "torch"
    thread_safety = "one lock: calls are serialised"
    supports_maps = True

    def __init__(self, stream_names: Sequence[str], checkpoint: str | Path, device: str = "auto"):
        super().__init__(stream_names)
        try:
            import torch

            from cotok_edge.model.vqa import CoTokVQA, greedy_unrolled
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend 'torch': PyTorch is not importable here ({e})"
            ) from e
        self._torch = torch
        self._greedy = greedy_unrolled
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = CoTokVQA.from_pretrained(checkpoint, map_location="cpu").to(self.device)
        self.model.eval()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"torch {self._torch.__version__} ({self.device})"

    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            x = {s: torch.from_numpy(np.asarray(streams[s])).to(self.device) for s in streams}
            video = self.model.encode_video(x)
            return {feature_name(s): video[s].float().cpu().numpy() for s in self.stream_names}

    def decode(
        self,
        features: Mapping[str, np.ndarray],
        ids: np.ndarray,
        mask: np.ndarray,
        maps: bool = False,
    ) -> DecodeResult:
        torch = self._torch
        model = self.model
        dev = self.device
        with self._lock, torch.inference_mode():
            video = {
                s: torch.from_numpy(features[feature_name(s)]).to(dev) for s in self.stream_names
            }
            q_ids = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(dev)
            q_mask = torch.from_numpy(np.asarray(mask, dtype=bool)).to(dev)
            state, step_maps = model.joint_memory(video, q_ids, q_mask, maps)
            answer, score, _ = self._greedy(model, state, q_ids, stop_early=True)
            out = answer.cpu().numpy()
            scores = score.float().cpu().numpy()
            found = None
            if maps:
                found = {
                    s: torch.stack([m[s] for m in step_maps or []], dim=1).float().cpu().numpy()
                    for s in self.stream_names
                }
        return DecodeResult(out, scores, found)
