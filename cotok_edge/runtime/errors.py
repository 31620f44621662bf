"""Exceptions of the embedded runtime.

Every error a caller can cause (a bad bundle, an engine for another device, a video
that does not decode, a bad question) is a ``ValueError`` subclass whose message names
the input and says what to do; the CLI prints that message as one line.
"""

from __future__ import annotations

from cotok_edge.bundle import BundleError
from cotok_edge.data.video import VideoDecodeError

__all__ = [
    "BackendUnavailableError",
    "BundleError",
    "EngineMismatchError",
    "ExplainUnavailableError",
    "PluginLibraryError",
    "QuestionError",
    "VideoDecodeError",
    "VideoInputError",
]


class BackendUnavailableError(ValueError):
    """The asked-for backend cannot run here (package missing, no engine in the bundle...)."""


class EngineMismatchError(BundleError):
    """The bundle's TensorRT engine was built for another GPU or TensorRT version."""


class PluginLibraryError(BundleError):
    """The TensorRT plugin library the engine needs is missing or does not load."""


class QuestionError(ValueError):
    """A question that is not text, or is empty."""


class VideoInputError(ValueError):
    """A video argument of the wrong kind (not a path, bytes or uint8 frames)."""


class ExplainUnavailableError(ValueError):
    """The backend in use cannot produce explanations (TokenLearner maps)."""
