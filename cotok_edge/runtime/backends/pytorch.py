"""The PyTorch backend: the bundle's FP32 checkpoint (``checkpoint/``), on CPU or CUDA.

The only backend that imports torch (when it is built, not when this module is).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cotok_edge.bundle import verify_files
from cotok_edge.contract import feature_name
from cotok_edge.manifest import Manifest

from ..errors import BackendUnavailableError
from .base import Backend, DecodeResult, Features, LoadOptions, importable

__all__ = ["TorchBackend"]


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

    @classmethod
    def unavailable(cls) -> str | None:
        return None if importable("torch") else "not installed"

    @classmethod
    def from_bundle(cls, root: Path, manifest: Manifest, options: LoadOptions) -> TorchBackend:
        if not manifest.checkpoint:
            raise BackendUnavailableError(
                f"backend 'torch': bundle {root} has no checkpoint (manifest 'checkpoint')"
            )
        ckpt = manifest.checkpoint.rstrip("/") + "/"
        verify_files(root, manifest, [ckpt])
        return cls(manifest.stream_names, root / ckpt, device=options.device)

    def describe(self) -> str:
        return f"torch {self._torch.__version__} ({self.device})"

    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            x = {s: torch.from_numpy(np.asarray(streams[s])).to(self.device) for s in streams}
            video = self.model.encode_video(x)
            return {feature_name(s): video[s].float().cpu().numpy() for s in self.stream_names}

    def decode(
        self, features: Features, ids: np.ndarray, mask: np.ndarray, maps: bool = False
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
