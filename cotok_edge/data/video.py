"""Video input: decode a clip once and sample the model's three streams from it.

The model takes three views of the *same* time window of a clip (see
``STREAMS``): many small frames (fine time), few large frames (fine space) and
one in between. This module turns a video file, or frames already in memory,
into those views:

1. **Window.** The whole clip (default), a centred window of ``duration``
   seconds, or ``start``/``end`` in seconds. Times are relative to the
   clip's first frame (the stream's ``start_time``), so files whose
   timestamps do not start at zero (MPEG-TS, edited MP4) behave the same.
2. **Instants.** Each stream of ``T`` frames samples the centres of ``T``
   equal bins of the window: ``t_i = start + (i + 0.5) * (end - start) / T``.
   All streams share the window, so frame ``i`` of every stream covers the
   same fraction of it.
3. **Frames.** At each instant the stream takes the frame *displayed* then:
   the last frame whose presentation time (``pts * time_base``, the file's
   real timestamps, so variable frame rate is handled) is ``<= t_i``. An
   instant before the first frame takes the first frame. An instant after the
   last frame takes the last frame: **short clips repeat their last frame**
   (also when a window extends past the end of the clip).
4. **Pixels.** Each needed frame is decoded once and converted once per
   stream size: the *short side* is resized to the stream size (area
   averaging, libswscale, straight from the decoder's pixel format, so
   grayscale, 10-bit and any other format become RGB here), then the long
   side is **centre-cropped to a square**. Non-square pixels (sample aspect
   ratio) are corrected before the crop, and the frame is turned upright
   according to the container's rotation (display matrix); mirror flags in
   the display matrix are ignored.

Decoding stops as soon as the last instant of the window is covered, and a
window that starts late seeks to the keyframe before it first.

Every failure to read a file raises :class:`VideoDecodeError` (a
``ValueError``) naming the file; PyAV's own exceptions never escape.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..model.config import CoTokConfig

__all__ = [
    "STREAMS",
    "StreamSpec",
    "Streams",
    "VideoDecodeError",
    "VideoFileNotFoundError",
    "load_streams",
    "probe_duration",
    "sample_frames",
    "sample_times",
    "stack_streams",
]

#: (name, frames T, square size S) of each stream the model takes, as in the paper
#: (every preset of the method shares them; the config is their one definition).
STREAMS: tuple[tuple[str, int, int], ...] = tuple(
    (s.name, s.frames, s.size) for s in CoTokConfig.preset("paper").streams
)

# Area averaging anti-aliases the large downscales (720p -> 64 px is 11x) and
# measured faster than libswscale's bilinear and bicubic for them.
_INTERPOLATION = "AREA"

# Let the decoder drop unused non-reference frames (see _FileReader.decode).
# Off only to check that it changes nothing.
_SKIP_NONREF = True


class VideoDecodeError(ValueError):
    """A video could not be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoFileNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist (also a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream: ``frames`` frames of ``size`` x ``size`` pixels."""

    name: str
    frames: int
    size: int


def _specs(streams: Iterable[Any]) -> tuple[StreamSpec, ...]:
    """Accept ``(name, frames, size)`` tuples or objects with those attributes
    (e.g. the model's ``StreamConfig``), so callers can pass ``cfg.streams``."""
    out = []
    for s in streams:
        if isinstance(s, StreamSpec):
            spec = s
        elif hasattr(s, "frames") and hasattr(s, "size") and hasattr(s, "name"):
            spec = StreamSpec(str(s.name), int(s.frames), int(s.size))
        else:
            name, frames, size = s
            spec = StreamSpec(str(name), int(frames), int(size))
        if spec.frames < 1 or spec.size < 1:
            raise ValueError(f"stream {spec.name!r}: frames and size must be >= 1, got {spec}")
        out.append(spec)
    if not out:
        raise ValueError("at least one stream spec is needed")
    if len({s.name for s in out}) != len(out):
        raise ValueError(f"stream names must be unique, got {[s.name for s in out]}")
    return tuple(out)


@dataclass
class Streams:
    """The sampled streams of one clip.

    Attributes:
        arrays: name -> uint8 ``[3, T, S, S]`` (RGB, channels first; a batch of
            these is the model's ``[B, 3, T, S, S]``).
        times: name -> float64 ``[T]``, the sampling instants in seconds from
            the clip's first frame.
        frame_times: name -> float64 ``[T]``, presentation time (seconds from
            the clip's first frame) of the frame shown at each instant.
        window: (start, end) in seconds from the clip's first frame.
        source: the file path, or ``"<memory>"``.
    """

    arrays: dict[str, np.ndarray]
    times: dict[str, np.ndarray]
    frame_times: dict[str, np.ndarray]
    window: tuple[float, float]
    source: str

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def names(self) -> list[str]:
        return list(self.arrays)


def stack_streams(items: Sequence[Streams]) -> dict[str, np.ndarray]:
    """Batch clips: name -> uint8 ``[B, 3, T, S, S]`` (``torch.from_numpy`` shares it)."""
    if not items:
        raise ValueError("stack_streams needs at least one Streams")
    names = items[0].names()
    for i, it in enumerate(items):
        if it.names() != names:
            raise ValueError(
                f"stack_streams: item {i} ({it.source}) has streams {it.names()}, expected {names}"
            )
    return {n: np.stack([it.arrays[n] for it in items]) for n in names}


def sample_times(start: float, end: float, frames: int) -> np.ndarray:
    """Centres of ``frames`` equal bins of ``[start, end]``: float64 ``[frames]``."""
    step = (end - start) / frames
    return start + (np.arange(frames, dtype=np.float64) + 0.5) * step


def _resolve_window(
    start: float | None,
    end: float | None,
    duration: float | None,
    clip_duration: float | None,
    where: str,
) -> tuple[float, float]:
    """(start, end) of the window in clip seconds. ``clip_duration`` may be
    None only when the caller gave both start and end."""
    if duration is not None and (start is not None or end is not None):
        raise ValueError(f"{where}: give either duration (centred window) or start/end, not both")
    if duration is not None:
        if duration <= 0:
            raise ValueError(f"{where}: window duration must be > 0, got {duration}")
        assert clip_duration is not None
        if duration >= clip_duration:
            # Keep real time: the clip plays from its start and its last
            # frame is held for the rest of the window.
            return 0.0, float(duration)
        s = (clip_duration - duration) / 2.0
        return s, s + float(duration)
    s = 0.0 if start is None else float(start)
    if end is None:
        assert clip_duration is not None
        e = clip_duration
    else:
        e = float(end)
    if s < 0:
        raise ValueError(f"{where}: window start must be >= 0, got {s}")
    if e <= s and not (e == s == 0.0):
        raise ValueError(f"{where}: window end ({e}) must be after its start ({s})")
    if clip_duration is not None and s >= clip_duration > 0 and start is not None:
        raise ValueError(
            f"{where}: window start {s:.3f} s is at or past the end of the clip "
            f"({clip_duration:.3f} s)"
        )
    return s, e


class _Plan:
    """All streams' instants merged in time order, and where each one goes."""

    def __init__(self, specs: tuple[StreamSpec, ...], start: float, end: float):
        self.specs = specs
        self.window = (start, end)
        self.times = {s.name: sample_times(start, end, s.frames) for s in specs}
        inst = np.concatenate([self.times[s.name] for s in specs])
        owner = np.concatenate([np.full(s.frames, k) for k, s in enumerate(specs)])
        slot = np.concatenate([np.arange(s.frames) for s in specs])
        order = np.argsort(inst, kind="stable")
        self.instants = inst[order]
        self.owner = owner[order]
        self.slot = slot[order]

    @property
    def last_instant(self) -> float:
        return float(self.instants[-1])


@dataclass
class _FillResult:
    arrays: dict[str, np.ndarray]
    frame_times: dict[str, np.ndarray]
    exhausted: bool  # the source ran out before the last instant
    last_time: float | None  # presentation time of the last frame seen
    first_time: float | None = None  # and of the first


def _fill(
    plan: _Plan,
    frames: Iterator[tuple[float, Any]],
    convert: Callable[[Any, int], np.ndarray],
) -> _FillResult:
    """Walk frames in presentation order and copy each one into every slot
    whose instant it is displayed at. ``convert(handle, size)`` -> ``[3, S, S]``
    (or a view of that shape).

    Stops pulling frames as soon as the last instant is covered, so nothing
    after the window is decoded.
    """
    arrays = {s.name: np.empty((3, s.frames, s.size, s.size), np.uint8) for s in plan.specs}
    ftimes = {s.name: np.empty(s.frames, np.float64) for s in plan.specs}
    n = len(plan.instants)
    k = 0
    prev: tuple[float, Any] | None = None
    cache: dict[int, np.ndarray] = {}

    def put(shown: tuple[float, Any], cache: dict[int, np.ndarray], k: int) -> None:
        spec = plan.specs[plan.owner[k]]
        img = cache.get(spec.size)
        if img is None:
            img = cache[spec.size] = convert(shown[1], spec.size)
        arrays[spec.name][:, plan.slot[k]] = img
        ftimes[spec.name][plan.slot[k]] = shown[0]

    exhausted = True
    first_time = None
    for t, handle in frames:
        cur = (t, handle)
        if first_time is None:
            first_time = t
        while k < n and plan.instants[k] < t:
            if prev is None:
                # Instant before the first frame: show the first frame.
                prev, cache = cur, {}
            put(prev, cache, k)
            k += 1
        if k == n:
            exhausted = False
            break
        if prev is not cur:
            prev, cache = cur, {}
    if prev is None:
        return _FillResult(arrays, ftimes, True, None)
    while k < n:  # past the last frame: hold it
        put(prev, cache, k)
        k += 1
    return _FillResult(arrays, ftimes, exhausted, prev[0], first_time)


def _square_geometry(width: int, height: int, size: int, sar: float) -> tuple[int, int]:
    """(width, height) to resize to so the short side is ``size`` (display aspect kept)."""
    dw = width * sar  # display width when pixels are not square
    scale = size / min(dw, height)
    return max(size, int(round(dw * scale))), max(size, int(round(height * scale)))


def _to_square(
    frame: av.VideoFrame,
    size: int,
    sar: float,
    rot_k: int,
    reformatter: VideoReformatter | None = None,
) -> np.ndarray:
    """Resize the short side to ``size``, centre-crop the long side, rotate
    upright: uint8 ``[size, size, 3]``.

    ``reformatter`` keeps libswscale's context from frame to frame (a fresh
    frame otherwise builds its own); one thread, since a single small frame is
    slower to split across threads than to scale.
    """
    rw, rh = _square_geometry(frame.width, frame.height, size, sar)
    scaler = reformatter or VideoReformatter()
    rgb = scaler.reformat(
        frame, width=rw, height=rh, format="rgb24", interpolation=_INTERPOLATION, threads=1
    ).to_ndarray()
    y0, x0 = (rh - size) // 2, (rw - size) // 2
    out = rgb[y0 : y0 + size, x0 : x0 + size]
    if rot_k:
        out = np.rot90(out, rot_k)
    return out


def _scaler(scalers: dict[int, VideoReformatter], size: int) -> VideoReformatter:
    """The cached libswscale context for ``size`` (built on first use only)."""
    scaler = scalers.get(size)
    if scaler is None:
        scaler = scalers[size] = VideoReformatter()
    return scaler


def _to_square_planes(frame: av.VideoFrame, size: int, reformatter: VideoReformatter) -> np.ndarray:
    """:func:`_to_square` for square-pixel, upright frames, as ``[3, size, size]``.

    libswscale writes planar GBR directly, which is the model's channels-first
    layout: no interleaved copy to transpose afterwards. For an RGB source it
    gives the same bytes as the rgb24 path (checked in the tests).
    """
    rw, rh = _square_geometry(frame.width, frame.height, size, 1.0)
    planar = reformatter.reformat(
        frame, width=rw, height=rh, format="gbrp", interpolation=_INTERPOLATION, threads=1
    )
    y0, x0 = (rh - size) // 2, (rw - size) // 2
    g, b, r = (
        np.frombuffer(p, np.uint8).reshape(rh, p.line_size)[y0 : y0 + size, x0 : x0 + size]
        for p in planar.planes
    )
    return np.stack((r, g, b))


# --------------------------------------------------------------------------
# Frames already in memory
# --------------------------------------------------------------------------


_POOL_WORKERS = min(4, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_thread_scalers = threading.local()


def _scaling_pool() -> ThreadPoolExecutor:
    """Threads for in-memory frame scaling (libswscale runs without the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_POOL_WORKERS, "cotok-scale")
        return _pool


def _scale_memory(arr: np.ndarray, i: int, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Frame ``i`` of ``[N, H, W, 3]`` / ``[N, H, W]`` uint8 at each size: ``{size: [3, S, S]}``."""
    fmt = "rgb24" if arr.ndim == 4 else "gray"
    # A copy into an FFmpeg-owned (padded) buffer: libswscale's SIMD loads may read a
    # little past a row's end, which the caller's array does not allow for.
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[i]), fmt)
    scalers = getattr(_thread_scalers, "by_size", None)
    if scalers is None:
        scalers = _thread_scalers.by_size = {}
    # At the frame's own size libswscale only repacks to planar, faster than a transpose.
    return {s: _to_square_planes(frame, s, _scaler(scalers, s)) for s in sizes}


def sample_frames(
    frames: np.ndarray,
    *,
    fps: float | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    start: float | None = None,
    end: float | None = None,
    duration: float | None = None,
    streams: Iterable[Any] = STREAMS,
) -> Streams:
    """Sample the streams from frames already in memory, exactly as from a file.

    Args:
        frames: uint8 ``[N, H, W, 3]`` RGB or ``[N, H, W]`` grayscale.
        fps: constant frame rate; frame ``i`` is shown from ``i / fps``.
        timestamps: float ``[N]`` presentation times in seconds (non-decreasing;
            variable frame rate). Give ``fps`` or ``timestamps`` (both: the
            timestamps place the frames, ``fps`` gives the last one's length).
        start, end, duration, streams: as in :func:`load_streams`.

    Returns:
        :class:`Streams` with ``source="<memory>"``. Times are relative to the
        first frame's timestamp.
    """
    where = "<memory>"
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8, got {arr.dtype}")
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 4 and arr.shape[-1] == 3) and arr.ndim != 3:
        raise ValueError(f"{where}: frames must be [N, H, W, 3] or [N, H, W], got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: no frames")
    n = arr.shape[0]
    if timestamps is None:
        if fps is None or fps <= 0:
            raise ValueError(f"{where}: give fps > 0 or per-frame timestamps")
        ts = np.arange(n, dtype=np.float64) / float(fps)
    else:
        ts = np.asarray(timestamps, dtype=np.float64)
        if ts.shape != (n,):
            raise ValueError(f"{where}: timestamps must have shape ({n},), got {ts.shape}")
        if n > 1 and np.any(np.diff(ts) < 0):
            raise ValueError(f"{where}: timestamps must be non-decreasing")
        ts = ts - ts[0]
    if fps is not None and fps > 0:
        interval = 1.0 / float(fps)
    elif n > 1:
        interval = float(np.median(np.diff(ts)))
    else:
        interval = 0.0
    clip_duration = float(ts[-1]) + interval
    specs = _specs(streams)
    s, e = _resolve_window(start, end, duration, clip_duration, where)
    plan = _Plan(specs, s, e)

    sizes = [spec.size for spec in specs]
    # The frame shown at an instant is the last one that starts at or before it (the
    # first frame before the first start), as _fill decides; scale those in parallel.
    shown = np.maximum(np.searchsorted(ts, plan.instants, side="right") - 1, 0)
    jobs: dict[int, set[int]] = {}
    for i, o in zip(shown.tolist(), plan.owner.tolist(), strict=True):
        jobs.setdefault(i, set()).add(sizes[o])
    pool = _scaling_pool()
    # One task per worker, not per frame: a future costs about as much as scaling a frame.
    work = list(jobs.items())
    chunks = [work[k::_POOL_WORKERS] for k in range(_POOL_WORKERS)]
    ready = {
        (i, size): img
        for chunk in pool.map(
            lambda c: [(i, _scale_memory(arr, i, tuple(z))) for i, z in c], chunks
        )
        for i, by in chunk
        for size, img in by.items()
    }

    def convert(i: int, size: int) -> np.ndarray:
        img = ready.get((i, size))  # only None if _fill picked another frame than above
        return _scale_memory(arr, i, (size,))[size] if img is None else img

    res = _fill(plan, ((float(t), i) for i, t in enumerate(ts)), convert)
    return Streams(res.arrays, plan.times, res.frame_times, (s, e), where)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def _declared_duration(container: Any, stream: Any) -> float | None:
    """What the file says the video lasts, in seconds, or None.

    Preference: the video stream's own duration, then its Matroska DURATION
    tag, then the container's (which may include a longer audio track)."""
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        m = _DURATION_TAG.match(tag.strip())
        if m:
            return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _frame_interval(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            r = float(rate)
            if 0 < r < 1000:
                return 1.0 / r
    return None


def _rotation_k(frame: av.VideoFrame, stream: Any) -> int:
    """Counter-clockwise quarter turns that make the frame upright."""
    deg = getattr(frame, "rotation", None)  # display matrix, PyAV >= 14
    if not deg:
        # Old FFmpeg exposed the display matrix as a clockwise "rotate" tag.
        tag = stream.metadata.get("rotate")
        deg = -float(tag) if tag else 0
    return int(round(float(deg) / 90.0)) % 4


class _FileReader:
    """One open file: its video stream, timing facts, demuxing and decoding."""

    def __init__(self, path: str, threads: int):
        self.path = path
        try:
            self.container = av.open(path, mode="r")
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"not a readable media file ({e.strerror or e})") from e
        except OSError as e:
            raise VideoDecodeError(path, f"cannot open ({e})") from e
        try:
            videos = self.container.streams.video
            if not videos:
                kinds = sorted({s.type for s in self.container.streams}) or ["none"]
                raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
            self.stream = videos[0]
            cc = self.stream.codec_context
            if threads != 1:
                cc.thread_type = "AUTO"
            cc.thread_count = max(0, threads)
            self.tb = self.stream.time_base or Fraction(1, 1_000_000)
            sar = self.stream.sample_aspect_ratio or cc.sample_aspect_ratio
            self.sar = float(sar) if sar and sar > 0 else 1.0
            st = self.stream.start_time
            if st is None and self.container.start_time is not None:
                st = int(self.container.start_time / av.time_base / self.tb)
            self.origin_ts = st  # None: take the first packet's time
            self.declared = _declared_duration(self.container, self.stream)
            self.interval = _frame_interval(self.stream)
        except BaseException:
            self.container.close()
            raise

    def close(self) -> None:
        self.container.close()

    def seconds(self, ts: int) -> float:
        # The one conversion used for packets and frames alike, so a frame's
        # time compares equal to its packet's.
        return float(ts * self.tb)

    def demux(self, seek_ts: int | None, last_rel: float | None) -> list[Any]:
        """Packets (no decoding) from ``seek_ts`` (or the start) until one is
        decoded after ``last_rel`` seconds past the origin (or to the end)."""
        if seek_ts is not None:
            self.container.seek(seek_ts, stream=self.stream, backward=True)
        origin = self.seconds(self.origin_ts) if self.origin_ts is not None else None
        packets = []
        for p in self.container.demux(self.stream):
            packets.append(p)
            if origin is None and p.pts is not None and seek_ts is None:
                origin = self.seconds(p.pts)  # first packet read from the top
            # Decode order: once a packet's dts passes the window, every frame
            # shown inside it (pts >= dts) has been read.
            if last_rel is not None and origin is not None and p.dts is not None:
                if self.seconds(p.dts) - origin > last_rel:
                    break
        return packets

    def packet_span(self, packets: list[Any]) -> tuple[float, float]:
        """(first presentation time, end of the last frame) in absolute seconds."""
        first = end = None
        for p in packets:
            if p.pts is None or not p.size:
                continue
            t0 = self.seconds(p.pts)
            dur = self.seconds(p.duration) if p.duration else (self.interval or 0.0)
            first = t0 if first is None else min(first, t0)
            end = t0 + dur if end is None else max(end, t0 + dur)
        if first is None or end is None:
            raise VideoDecodeError(self.path, "zero decodable frames (the video stream is empty)")
        return first, end

    def needed_pts(
        self, packets: list[Any], origin: float, instants: np.ndarray
    ) -> set[int] | None:
        """pts of the frames shown at the instants, from the packets alone;
        None when the packets' timestamps cannot say (missing or repeated)."""
        pts = [p.pts for p in packets if p.size]
        if not pts or any(x is None for x in pts) or len(set(pts)) != len(pts):
            return None
        arr = np.array(sorted(pts), dtype=np.int64)
        times = np.array([self.seconds(int(x)) - origin for x in arr])
        idx = np.searchsorted(times, instants, side="right") - 1
        return set(arr[np.unique(np.clip(idx, 0, None))].tolist())

    def decode(
        self, packets: list[Any], origin: float, needed: set[int] | None, seen: set[int]
    ) -> Iterator[tuple[float, av.VideoFrame]]:
        """Frames in presentation order as (seconds from ``origin``, frame).

        Packets whose frame is not ``needed`` are decoded with
        ``skip_frame=NONREF``: the decoder drops them when no other frame
        references them (B-frames), which roughly halves H.264 decoding when
        only a few frames of a clip are used; reference frames are still
        decoded. ``seen`` collects the pts of every frame returned."""
        cc = self.stream.codec_context
        mode = "DEFAULT"
        last_t = None
        try:
            for p in packets:
                if needed is not None and p.pts is not None:
                    want = "DEFAULT" if p.pts in needed else "NONREF"
                    if want != mode:
                        cc.skip_frame = mode = want
                for f in self.stream.decode(p):
                    last_t = self._time(f, origin, last_t, seen)
                    yield last_t, f
            if not packets or packets[-1].size:
                # Stopped before the end of the file: drain reordered frames.
                for f in self.stream.decode(None):
                    last_t = self._time(f, origin, last_t, seen)
                    yield last_t, f
        finally:
            if mode != "DEFAULT":
                cc.skip_frame = "DEFAULT"

    def _time(self, f: av.VideoFrame, origin: float, last_t: float | None, seen: set[int]) -> float:
        ts = f.pts if f.pts is not None else f.dts
        if ts is None:
            # No timestamp at all: one frame interval after the previous frame.
            return (last_t + (self.interval or 0.0)) if last_t is not None else 0.0
        seen.add(ts)
        return self.seconds(ts) - origin

    def restart(self) -> None:
        self.container.seek(0, stream=self.stream, backward=True)
        self.stream.codec_context.flush_buffers()


def load_streams(
    path: str | os.PathLike[str],
    *,
    start: float | None = None,
    end: float | None = None,
    duration: float | None = None,
    streams: Iterable[Any] = STREAMS,
    threads: int = 1,
) -> Streams:
    """Decode a video file once and sample every stream over one time window.

    Args:
        path: any file FFmpeg reads (mp4, mkv, avi, webm, ...).
        start, end: window in seconds from the clip's first frame. ``end``
            alone starts at 0; ``start`` alone runs to the declared end.
        duration: instead of start/end, a window of this length centred in the
            clip (the clip length the file declares); when it is longer than
            the clip, the window is ``[0, duration]`` and the last frame holds.
        streams: ``(name, frames, size)`` tuples or objects with those
            attributes (default :data:`STREAMS`).
        threads: decoder threads; 1 (default) suits data-loader workers that
            already run one clip per core, 0 lets FFmpeg choose.

    Without a window the whole clip is used: the video packets are demuxed
    first (no decoding) to learn where the last frame really ends, because
    MP4 durations are computed from decode timestamps and run short for
    variable-frame-rate files with B-frames.

    Returns:
        :class:`Streams`, ``arrays[name]`` uint8 ``[3, T, S, S]``.

    Raises:
        VideoFileNotFoundError: the file does not exist.
        VideoDecodeError: not a media file, no video stream, no decodable
            frame, corrupt data, or the stream stops before it says it ends
            (truncated file).
        ValueError: a bad window (start past the end, end before start).
    """
    p = str(path)
    if not os.path.exists(p):
        raise VideoFileNotFoundError(p, "no such file")
    if os.path.isdir(p):
        raise VideoDecodeError(p, "is a directory, not a video file")
    specs = _specs(streams)
    reader = _FileReader(p, threads)
    try:
        return _load(reader, specs, start, end, duration)
    except av.FFmpegError as e:
        raise VideoDecodeError(p, f"corrupt video data ({e.strerror or e})") from e
    except (OSError, EOFError) as e:
        raise VideoDecodeError(p, f"read failed ({e})") from e
    finally:
        reader.close()


def _load(
    reader: _FileReader,
    specs: tuple[StreamSpec, ...],
    start: float | None,
    end: float | None,
    duration: float | None,
) -> Streams:
    p = reader.path
    declared = reader.declared
    seek_ts = None
    if start is None and end is None and duration is None:
        packets = reader.demux(None, None)
        first, stop = reader.packet_span(packets)
        origin = reader.seconds(reader.origin_ts) if reader.origin_ts is not None else first
        expected = stop - origin
        if declared is not None and expected < declared - _tolerance(reader, declared):
            raise VideoDecodeError(
                p,
                f"video stream stops at {expected:.3f} s but the file declares "
                f"{declared:.3f} s (truncated?)",
            )
        plan = _Plan(specs, 0.0, expected)
    else:
        clip = declared
        if clip is None and (duration is not None or end is None):
            first, stop = reader.packet_span(reader.demux(None, None))
            clip = stop - first
            reader.restart()
        s, e = _resolve_window(start, end, duration, clip, p)
        plan = _Plan(specs, s, e)
        expected = clip
        # Seeking costs an index lookup and lands on the keyframe before the
        # target anyway; worth it only when the window starts a while in.
        if reader.origin_ts is not None and s > 2 * (reader.interval or 0.04):
            seek_ts = reader.origin_ts + int(s / reader.tb)
        packets = reader.demux(seek_ts, plan.last_instant)
        if seek_ts is not None and not _landed_well(packets, seek_ts):
            # The demuxer landed after the window start (bad index) or not
            # on a keyframe (formats without a keyframe index, e.g. MPEG-TS),
            # so the frames up to the window could not be decoded: read from
            # the top instead.
            reader.restart()
            packets = reader.demux(None, plan.last_instant)
        if reader.origin_ts is not None:
            origin = reader.seconds(reader.origin_ts)
        else:
            origin = reader.packet_span(packets)[0]
    res = _decode_packets(reader, plan, packets, origin)
    if seek_ts is not None and (res.first_time is None or res.first_time > plan.instants[0]):
        # After the seek the decoder could not show the window's first
        # frame (a seek point flagged key that is not, B-frames that need
        # the frame before it): decode from the top instead.
        reader.restart()
        packets = reader.demux(None, plan.last_instant)
        res = _decode_packets(reader, plan, packets, origin)
    if res.last_time is None:
        raise VideoDecodeError(p, "zero decodable frames")
    if res.exhausted and expected is not None:
        # The decoder ran dry before the window's last instant. Fine for a
        # short clip (the last frame holds); an error if the file says the
        # video goes on past where the data stopped.
        frame_end = res.last_time + (reader.interval or 0.0)
        need = min(plan.last_instant, expected)
        if frame_end < need - _tolerance(reader, expected):
            raise VideoDecodeError(
                p,
                f"video stream stops at {frame_end:.3f} s but should run to "
                f"{expected:.3f} s (truncated or corrupt)",
            )
    return Streams(res.arrays, plan.times, res.frame_times, plan.window, p)


def _decode_packets(
    reader: _FileReader, plan: _Plan, packets: list[Any], origin: float
) -> _FillResult:
    needed = reader.needed_pts(packets, origin, plan.instants) if _SKIP_NONREF else None
    res, seen = _decode_fill(reader, plan, packets, origin, needed)
    if needed is not None and res.last_time is not None:
        horizon = res.last_time + origin + 1e-9
        if any(reader.seconds(x) <= horizon and x not in seen for x in needed):
            # A frame the plan relies on did not come out of the decoder
            # (timestamps that differ between packets and frames): decode
            # again without skipping anything.
            reader.stream.codec_context.flush_buffers()
            res, _ = _decode_fill(reader, plan, packets, origin, None)
    return res


def _landed_well(packets: list[Any], seek_ts: int) -> bool:
    """Did a seek put a keyframe at or before ``seek_ts`` first?"""
    data = [q for q in packets if q.size]
    if not data or not data[0].is_keyframe:
        return False
    pts = [q.pts for q in data if q.pts is not None]
    return bool(pts) and min(pts) <= seek_ts


def _decode_fill(
    reader: _FileReader,
    plan: _Plan,
    packets: list[Any],
    origin: float,
    needed: set[int] | None,
) -> tuple[_FillResult, set[int]]:
    seen: set[int] = set()
    rot = [0]

    scalers: dict[int, VideoReformatter] = {}

    def convert(frame: av.VideoFrame, size: int) -> np.ndarray:
        return _to_square(frame, size, reader.sar, rot[0], _scaler(scalers, size)).transpose(
            2, 0, 1
        )

    def frames() -> Iterator[tuple[float, av.VideoFrame]]:
        for i, (t, f) in enumerate(reader.decode(packets, origin, needed, seen)):
            if i == 0:
                rot[0] = _rotation_k(f, reader.stream)
            yield t, f

    return _fill(plan, frames(), convert), seen


def _tolerance(reader: _FileReader, expected: float) -> float:
    """How much earlier than declared a stream may end before we call it
    truncated: container durations are rounded and include the last frame's
    display time, so allow a few frames or 5 %."""
    interval = reader.interval or 0.04
    return max(3.0 * interval, 0.05 * expected)


def probe_duration(path: str | os.PathLike[str]) -> float:
    """Declared duration of the file's first video stream in seconds (no decoding)."""
    p = str(path)
    if not os.path.exists(p):
        raise VideoFileNotFoundError(p, "no such file")
    reader = _FileReader(p, 1)
    try:
        d = reader.declared
        if d is None:
            first, stop = reader.packet_span(reader.demux(None, None))
            d = stop - first
        return d if math.isfinite(d) else 0.0
    except av.FFmpegError as e:
        raise VideoDecodeError(p, f"corrupt video data ({e.strerror or e})") from e
    finally:
        reader.close()
