"""What every inference backend is: :class:`Backend`, its :class:`DecodeResult`, its options.

A backend runs the two halves of the model on numpy arrays:

- ``encode(streams)``: ``{s: uint8 [C, 3, T_s, H_s, W_s]}`` -> ``{"v_s": float32 [C, N_s, d]}``
  (the question-independent video encoder, run once per clip);
- ``decode(features, ids, mask, maps)``: ``{"v_s": [B, N_s, d]}``, ``question_ids [B, L]``
  int64, ``question_mask [B, L]`` bool -> :class:`DecodeResult` (answer ids ``[B, A]``,
  scores ``[B]`` and, with ``maps``, the TokenLearner maps ``{s: [B, K, S, N_s]}``).

Each backend also says, without building anything, whether it can run here
(:meth:`Backend.unavailable`) and for a given bundle (:meth:`Backend.skip_reason`), and
builds itself from a bundle (:meth:`Backend.from_bundle`, which checks the sha256 of
the files it uses): ``cotok_edge.runtime.load`` picks from the registry with these.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cotok_edge.manifest import Manifest

__all__ = ["Backend", "DecodeResult", "Features", "LoadOptions", "importable"]

#: Stream features by tensor name: ``{"v_s": float32 [B, N_s, d]}``.
Features = Mapping[str, np.ndarray]


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


@dataclass
class LoadOptions:
    """Options of ``runtime.load`` that some backends read.

    providers: onnxruntime execution providers (None: CUDA if available, then CPU).
    threads: onnxruntime intra-op threads (None: its own choice).
    spin: onnxruntime idle threads busy-wait between ops.
    device: torch backend device, ``auto`` | ``cpu`` | ``cuda``.
    """

    providers: Sequence[str] | None = None
    threads: int | None = None
    spin: bool = False
    device: str = "auto"


def importable(name: str) -> bool:
    """Whether ``import name`` would find the package (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


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

    # Registry hooks ----------------------------------------------------------------
    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run on this machine (a package missing), else None.

        Cheap: looks for packages without importing them.
        """
        return None

    @classmethod
    def skip_reason(cls, manifest: Manifest) -> str | None:
        """Why ``auto`` should not try this backend for this bundle, else None."""
        return None

    @classmethod
    @abstractmethod
    def from_bundle(cls, root: Path, manifest: Manifest, options: LoadOptions) -> Backend:
        """Verify the files this backend uses (sha256) and build it."""

    # Inference ---------------------------------------------------------------------
    @abstractmethod
    def encode(self, streams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 ``{s: [C, 3, T_s, H_s, W_s]}`` -> float32 ``{"v_s": [C, N_s, d]}``."""

    @abstractmethod
    def decode(
        self, features: Features, ids: np.ndarray, mask: np.ndarray, maps: bool = False
    ) -> DecodeResult:
        """``{"v_s": [B, N_s, d]}``, ``ids [B, L]`` int64, ``mask [B, L]`` bool -> answers."""

    def describe(self) -> str:
        """One line for logs: the backend and what it runs on."""
        return self.name
