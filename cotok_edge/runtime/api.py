"""``load`` and ``VideoQA``: one pre/post-processing path, three inference backends.

Per call: the video is decoded and sampled into the model's streams once
(:mod:`cotok_edge.data.video`), the questions are tokenised (the bundle's
``tokenizer.json``), the backend runs the video encoder once per clip and the question
decoder once per batch of questions, and the answer tokens are detokenised. Only the
two inference calls differ between backends (:class:`~cotok_edge.runtime.backends.Backend`),
picked from :data:`~cotok_edge.runtime.backends.REGISTRY`.

With the ``onnxruntime`` or ``tensorrt`` backend nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from cotok_edge.bundle import BundleError, Manifest, read_manifest, verify_files
from cotok_edge.data.text import decode_answer, load_tokenizer
from cotok_edge.data.video import Streams, VideoDecodeError, load_streams, sample_frames

from . import explain as _explain
from .backends import REGISTRY, Backend, DecodeResult, LoadOptions
from .errors import (
    BackendUnavailableError,
    EngineMismatchError,
    ExplainUnavailableError,
    PluginLibraryError,
    QuestionError,
    VideoInputError,
)

__all__ = ["BACKENDS", "Answer", "VideoLike", "VideoQA", "load"]

log = logging.getLogger("cotok_edge.runtime")

#: Backends in the order ``auto`` tries them (fastest first): the registry's names.
BACKENDS = tuple(REGISTRY)
#: Frame rate assumed for in-memory frames when none is given (only the sampling
#: instants' times depend on it: every stream spans all the frames either way).
DEFAULT_FPS = 30.0
STAGES = ("decode", "preprocess", "inference", "postprocess")

VideoLike = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Streams]  # noqa: UP007


@dataclass
class Answer:
    """One answer.

    text: the answer, detokenised (may be ``""`` if the model stops at once).
    score: confidence in (0, 1]: the geometric mean of the probabilities of the answer
        tokens up to and including ``[EOS]`` (``exp`` of the graph's ``answer_scores``).
    timings_ms: milliseconds per stage, ``decode`` (video file to streams),
        ``preprocess`` (sampling in-memory frames, tokenising, batching), ``inference``
        (video encoder + question decoder), ``postprocess`` (detokenising) and
        ``total``. They are the stages of the call that produced the answer: answers
        of one call share them (the video is decoded and encoded once per call).
    question: the question as asked.
    """

    text: str
    score: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    question: str = ""


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class VideoQA:
    """A loaded bundle: answers questions about videos. Make one with :func:`load`.

    Attributes:
        backend: ``"tensorrt"``, ``"onnxruntime"`` or ``"torch"``.
        backend_note: which backend ``load`` chose and why (what ``auto`` skipped).
        bundle: the bundle folder; manifest: its :class:`~cotok_edge.manifest.Manifest`.
        question_tokens: L, the question length the graphs take (longer questions are
            truncated with a warning).
        max_batch: questions (and clips) per inference call.

    Thread safety: ``answer``, ``answer_batch`` and ``explain`` may be called from
    several threads at once and give the same answers as serial calls. The shared
    pre/post-processing holds no per-call state (the ``tokenizers`` tokenizer is
    read-only here); each backend documents its own choice (``thread_safety``):
    onnxruntime takes no lock (``InferenceSession.run`` is thread-safe), torch
    serialises calls with one lock, tensorrt keeps one execution context, CUDA stream
    and buffer set per thread.
    """

    def __init__(
        self,
        bundle: Path,
        manifest: Manifest,
        inference: Backend,
        tokenizer: Any,
        note: str = "",
    ):
        self.bundle = bundle
        self.manifest = manifest
        self.inference = inference
        self.backend: str = inference.name
        self.backend_note = note
        self.tokenizer = tokenizer
        self.stream_specs: list[tuple[str, int, int]] = manifest.stream_specs
        self.stream_names = manifest.stream_names
        self.grids = {s["name"]: _explain.feature_grid(s) for s in manifest.model_config["streams"]}
        # Bundles built before StreamConfig.token_pool existed pooled by softmax.
        self.pools = {
            s["name"]: s.get("token_pool", "softmax") for s in manifest.model_config["streams"]
        }
        self.question_tokens = manifest.question_tokens
        self.pad_id = manifest.pad_id
        self.eos_id = manifest.eos_id
        self.fixed_batch: int | None = manifest.fixed_batch
        self.max_batch = manifest.max_batch

    def __repr__(self) -> str:
        return f"VideoQA(bundle={str(self.bundle)!r}, backend={self.backend!r})"

    # Inputs -----------------------------------------------------------------------
    def _streams(self, video: VideoLike, fps: float | None) -> tuple[Streams, float, float]:
        """(streams, decode ms, preprocess ms) for one video argument."""
        t0 = time.perf_counter()
        if isinstance(video, Streams):
            missing = [s for s in self.stream_names if s not in video.arrays]
            if missing:
                raise VideoInputError(f"video (Streams): missing streams {missing}")
            return video, 0.0, 0.0
        if isinstance(video, str | os.PathLike):
            return load_streams(video, streams=self.stream_specs), _ms(t0), 0.0
        if isinstance(video, bytes | bytearray | memoryview):
            data = bytes(video)
            if not data:
                raise VideoDecodeError("<video bytes>", "empty (0 bytes)")
            with tempfile.TemporaryDirectory(prefix="cotok-video-") as tmp:
                path = Path(tmp) / "video"
                path.write_bytes(data)
                try:
                    streams = load_streams(path, streams=self.stream_specs)
                except VideoDecodeError as e:
                    raise VideoDecodeError(f"<video bytes, {len(data)} bytes>", e.reason) from None
            return streams, _ms(t0), 0.0
        if isinstance(video, np.ndarray):
            if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
                raise VideoInputError(
                    f"video (frames): expected uint8 [T, H, W, 3] RGB frames, got "
                    f"{video.dtype} {list(video.shape)}"
                )
            if video.shape[0] == 0 or min(video.shape[1:3]) == 0:
                raise VideoInputError(f"video (frames): empty array {list(video.shape)}")
            rate = DEFAULT_FPS if fps is None else float(fps)
            streams = sample_frames(video, fps=rate, streams=self.stream_specs)
            return streams, 0.0, _ms(t0)
        raise VideoInputError(
            f"video: expected a file path, the file's bytes or uint8 [T, H, W, 3] frames, "
            f"got {type(video).__name__}"
        )

    def _encode_questions(self, questions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Questions -> ``ids [B, L]`` int64 (``pad_id`` after the end), ``mask [B, L]`` bool."""
        for i, q in enumerate(questions):
            where = f"question {i + 1}" if len(questions) > 1 else "question"
            if not isinstance(q, str):
                raise QuestionError(f"{where}: expected text (str), got {type(q).__name__}")
            if not q.strip():
                raise QuestionError(f"{where} is empty")
        length = self.question_tokens
        ids = np.full((len(questions), length), self.pad_id, dtype=np.int64)
        for i, (q, enc) in enumerate(
            zip(questions, self.tokenizer.encode_batch(list(questions)), strict=True)
        ):
            row = list(enc.ids)
            if len(row) > length:
                warnings.warn(
                    f"question {q!r} is {len(row)} tokens with [EOS], longer than the "
                    f"{length} the model takes: truncated to its first {length - 1} tokens",
                    UserWarning,
                    stacklevel=4,
                )
                row = row[: length - 1] + [self.eos_id]
            ids[i, : len(row)] = row
        return ids, ids != self.pad_id

    # Core -------------------------------------------------------------------------
    def _chunks(self, n: int) -> list[np.ndarray]:
        step = max(1, self.max_batch)
        return [np.arange(i, min(n, i + step)) for i in range(0, n, step)]

    def _pad_rows(self, arrays: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Pad a chunk to the fixed batch size (repeating its last row) if the graph has one."""
        if self.fixed_batch is None or rows == self.fixed_batch:
            return dict(arrays)
        extra = self.fixed_batch - rows
        return {k: np.concatenate([v, np.repeat(v[-1:], extra, 0)]) for k, v in arrays.items()}

    def _encode(self, clips: Sequence[Streams]) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        for idx in self._chunks(len(clips)):
            batch = {s: np.stack([clips[i].arrays[s] for i in idx]) for s in self.stream_names}
            out = self.inference.encode(self._pad_rows(batch, len(idx)))
            parts.append({k: v[: len(idx)] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _decode(
        self,
        features: Mapping[str, np.ndarray],
        clip_of: np.ndarray,
        ids: np.ndarray,
        mask: np.ndarray,
        maps: bool = False,
    ) -> DecodeResult:
        outs: list[DecodeResult] = []
        for idx in self._chunks(len(ids)):
            feeds = {k: v[clip_of[idx]] for k, v in features.items()}
            feeds.update(question_ids=ids[idx], question_mask=mask[idx])
            feeds = self._pad_rows(feeds, len(idx))
            q_ids, q_mask = feeds.pop("question_ids"), feeds.pop("question_mask")
            r = self.inference.decode(feeds, q_ids, q_mask, maps)
            n = len(idx)
            outs.append(
                DecodeResult(
                    r.ids[:n],
                    r.scores[:n],
                    None if r.maps is None else {s: m[:n] for s, m in r.maps.items()},
                )  # fmt: skip
            )
        return DecodeResult(
            np.concatenate([o.ids for o in outs]),
            np.concatenate([o.scores for o in outs]),
            None if not maps else
            {s: np.concatenate([o.maps[s] for o in outs if o.maps]) for s in self.stream_names},
        )  # fmt: skip

    def _run(
        self,
        videos: Sequence[VideoLike],
        questions: Sequence[Any],
        clip_of: Sequence[int],
        fps: float | None,
    ) -> list[Answer]:
        t_all = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        ids, mask = self._encode_questions(questions)
        timings["preprocess"] += _ms(t0)
        clips = []
        for v in videos:
            streams, dec, pre = self._streams(v, fps)
            clips.append(streams)
            timings["decode"] += dec
            timings["preprocess"] += pre
        t0 = time.perf_counter()
        features = self._encode(clips)
        result = self._decode(features, np.asarray(clip_of, dtype=np.int64), ids, mask)
        timings["inference"] = _ms(t0)
        t0 = time.perf_counter()
        texts = [decode_answer(self.tokenizer, row) for row in result.ids]
        scores = [math.exp(float(s)) for s in result.scores]
        timings["postprocess"] = _ms(t0)
        timings["total"] = _ms(t_all)
        return [
            Answer(text, score, dict(timings), str(q))
            for text, score, q in zip(texts, scores, questions, strict=True)
        ]

    # Public API -------------------------------------------------------------------
    def answer(
        self, video: VideoLike, question: str | Sequence[str], *, fps: float | None = None
    ) -> Answer | list[Answer]:
        """Answer one question, or several about the same clip.

        Args:
            video: a video file path, the file's bytes, or uint8 ``[T, H, W, 3]`` RGB
                frames (every stream is sampled over all the frames; ``fps``, default
                30, only sets their times), or pre-sampled ``Streams``.
            question: a question, or a list of questions. With a list, the video is
                decoded and encoded once and the question decoder runs once per batch of
                at most ``max_batch`` questions.

        Returns:
            An :class:`Answer`, or a list of them (in the questions' order) for a list.

        Raises:
            VideoDecodeError: the video does not decode (names the file).
            VideoInputError: ``video`` is of no accepted kind.
            QuestionError: a question that is not text or is empty.
        A question longer than ``question_tokens`` is truncated with a warning naming it.
        """
        if isinstance(question, str):
            return self._run([video], [question], [0], fps)[0]
        if not isinstance(question, Sequence) or isinstance(question, bytes):
            raise QuestionError(
                f"question: expected text or a list of texts, got {type(question).__name__}"
            )
        if not question:
            raise QuestionError("question: an empty list of questions")
        qs = list(question)
        return self._run([video], qs, [0] * len(qs), fps)

    def answer_batch(
        self, pairs: Iterable[tuple[VideoLike, str]], *, fps: float | None = None
    ) -> list[Answer]:
        """Answer ``(video, question)`` pairs, in order.

        Each distinct video (same path, or the same object) is decoded and encoded once;
        clips go through the video encoder and questions through the decoder in batches
        of at most ``max_batch``.
        """
        videos: list[VideoLike] = []
        keys: dict[Any, int] = {}
        questions: list[Any] = []
        clip_of: list[int] = []
        for i, pair in enumerate(pairs):
            try:
                video, q = pair
            except (TypeError, ValueError):
                raise VideoInputError(
                    f"answer_batch: item {i} is not a (video, question) pair"
                ) from None
            key: Any = (
                ("path", os.path.abspath(os.fspath(video)))
                if isinstance(video, str | os.PathLike)
                else ("obj", id(video))
            )
            if key not in keys:
                keys[key] = len(videos)
                videos.append(video)
            clip_of.append(keys[key])
            questions.append(q)
        if not questions:
            return []
        return self._run(videos, questions, clip_of, fps)

    def explain(
        self,
        video: VideoLike,
        question: str,
        out_png: str | Path,
        *,
        fps: float | None = None,
    ) -> _explain.Explanation:
        """Answer ``question`` and write a picture of what the model looked at.

        The picture has one strip per stream: its sampled frames with the TokenLearner
        maps overlaid, averaged over the K co-tokenization steps and the S tokens per
        step and folded back to the stream's feature grid ``[T_s, H_s, W_s]``; and a bar
        per stream of its contribution (see
        :func:`~cotok_edge.runtime.explain.contributions`: each stream's share of the L2
        norm of the video tokens the TokenLearners gave the transformer).

        Served by the torch backend and the onnxruntime one (``question_decoder_explain.onnx``,
        FP32 even in INT8 bundles: the answer shown is the deployed decoder's). The
        tensorrt backend raises :class:`ExplainUnavailableError`.
        """
        if not self.inference.supports_maps:
            if self.backend == "tensorrt":
                raise ExplainUnavailableError(
                    "explanations are not available with the tensorrt backend (its engine "
                    "has no TokenLearner maps); load the bundle with backend='onnxruntime' "
                    "or backend='torch' to explain"
                )
            raise ExplainUnavailableError(
                f"the {self.backend} backend of bundle {self.bundle} cannot explain answers "
                "(no question_decoder_explain.onnx)"
            )
        if not isinstance(question, str):
            raise QuestionError(f"question: expected text (str), got {type(question).__name__}")
        streams, _, _ = self._streams(video, fps)
        ans = self._run([streams], [question], [0], fps)[0]
        ids, mask = self._encode_questions([question])
        features = self._encode([streams])
        res = self._decode(features, np.zeros(1, np.int64), ids, mask, maps=True)
        assert res.maps is not None
        folded = {
            s: _explain.fold_maps(res.maps[s][0], self.grids[s], self.pools[s])
            for s in self.stream_names
        }
        shares = _explain.contributions(
            {s: res.maps[s][0] for s in self.stream_names},
            {s: features[f"v_{s}"][0] for s in self.stream_names},
            self.pools,
        )
        title = (
            f"Q: {question}\nA: {ans.text or '(empty)'}  (score {ans.score:.2f}, {self.backend})"
        )
        path = _explain.render(out_png, streams.arrays, folded, shares, title, self.stream_names)
        return _explain.Explanation(ans, shares, folded, path)


# Loading ----------------------------------------------------------------------------
def _pick(
    backend: str, root: Path, manifest: Manifest, options: LoadOptions
) -> tuple[Backend, list[str]]:
    """The named backend, or for ``auto`` the first of :data:`REGISTRY` that can run here;
    with what ``auto`` skipped and why."""
    if backend != "auto":
        return REGISTRY[backend].from_bundle(root, manifest, options), []
    skipped: list[str] = []
    for name, cls in REGISTRY.items():
        reason = cls.skip_reason(manifest) or cls.unavailable()
        if reason is not None:
            skipped.append(f"{name}: {reason}")
            continue
        try:
            return cls.from_bundle(root, manifest, options), skipped
        except (BackendUnavailableError, EngineMismatchError, PluginLibraryError) as e:
            skipped.append(f"{name}: {e}")
    raise BackendUnavailableError(f"bundle {root}: no backend can run here ({'; '.join(skipped)})")


def load(
    bundle_dir: str | os.PathLike[str],
    backend: str = "auto",
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spin: bool = False,
    device: str = "auto",
    verbose: bool | None = None,
) -> VideoQA:
    """Load a bundle written by ``python -m cotok_edge.build``.

    Reads ``manifest.json`` (format version checked), verifies the sha256 of the
    tokenizer and of every file the chosen backend uses, and builds the backend.

    Args:
        bundle_dir: the bundle folder.
        backend: ``auto`` (the fastest that can run here: tensorrt, then onnxruntime,
            then torch), or ``tensorrt`` | ``onnxruntime`` | ``torch``.
        providers: onnxruntime execution providers (default: CUDA if available, CPU).
        threads: onnxruntime intra-op threads (default: its own choice).
        spin: let onnxruntime's idle worker threads busy-wait between ops (its own
            default). Off here: on the 2-core benchmark machine spinning made
            inference slower (benchmarks/RESULTS.md); try it on an otherwise idle
            many-core host.
        device: torch backend device, ``auto`` (CUDA if available) | ``cpu`` | ``cuda``.
        verbose: print the backend choice on stderr (default: only for ``auto``); it
            is always logged on the ``cotok_edge.runtime`` logger.

    Raises:
        BundleError: missing or unreadable bundle, unknown format version, a file that
            does not match its sha256 (and its subclasses below).
        EngineMismatchError: the engine was built for another GPU or TensorRT version
            (the message gives the command that rebuilds it on this device).
        PluginLibraryError: the engine's plugin library is missing or does not load.
        BackendUnavailableError: the named backend cannot run here.
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    if backend != "auto" and backend not in REGISTRY:
        raise ValueError(f"backend: unknown {backend!r}; choose auto or one of {BACKENDS}")
    tok_rel = manifest.tokenizer
    verify_files(root, manifest, [tok_rel])
    try:
        tokenizer = load_tokenizer(root / tok_rel)
    except (OSError, ValueError) as e:
        raise BundleError(f"bundle {root}: {tok_rel}: {e}") from None

    options = LoadOptions(providers=providers, threads=threads, spin=spin, device=device)
    chosen, skipped = _pick(backend, root, manifest, options)
    note = f"cotok_edge.runtime: backend {chosen.name} [{chosen.describe()}]"
    if skipped:
        note += f" (skipped {'; '.join(skipped)})"
    log.info(note)
    if verbose if verbose is not None else backend == "auto":
        print(note, file=sys.stderr)
    return VideoQA(root, manifest, chosen, tokenizer, note)
