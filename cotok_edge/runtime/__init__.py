"""The embedded runtime: answer questions about videos from a bundle.

    from cotok_edge.runtime import load
    qa = load("bundle-dir")                      # backend="auto": tensorrt > onnxruntime > torch
    ans = qa.answer("clip.mp4", "what color is the ball?")
    ans.text, ans.score, ans.timings_ms
    qa.answer(frames, ["q1", "q2"])              # decodes and encodes the clip once
    qa.answer_batch([(video, q), ...])
    qa.explain("clip.mp4", "q", "why.png")       # TokenLearner maps + stream contributions

Backends differ only in inference (:mod:`.backends`, one module or package per backend,
picked by ``load`` from ``backends.REGISTRY``); decoding,
sampling, tokenising and detokenising are shared (:mod:`.api`). Importing this package,
and using it with the onnxruntime or tensorrt backend, imports neither torch nor
modelopt. Errors a caller can cause are ``ValueError`` subclasses (:mod:`.errors`).
"""

from __future__ import annotations

from .api import BACKENDS, Answer, VideoLike, VideoQA, load
from .errors import (
    BackendUnavailableError,
    BundleError,
    EngineMismatchError,
    ExplainUnavailableError,
    PluginLibraryError,
    QuestionError,
    VideoDecodeError,
    VideoInputError,
)
from .explain import Explanation

__all__ = [
    "BACKENDS",
    "Answer",
    "BackendUnavailableError",
    "BundleError",
    "EngineMismatchError",
    "ExplainUnavailableError",
    "Explanation",
    "PluginLibraryError",
    "QuestionError",
    "VideoDecodeError",
    "VideoInputError",
    "VideoLike",
    "VideoQA",
    "load",
]
