"""Decode + stream sampling cost against plain PyAV decoding of the same frames.

Generates a 10 s 1280x720 30 fps H.264 clip with PyAV in a temporary folder,
then times, for a few windows:

- ``ours``: :func:`cotok_edge.data.video.load_streams` (decode once, three
  streams 32x64, 16x112, 8x224, resize + crop + channels-first copy). By
  default it lets the decoder drop the non-reference frames (B-frames) that
  no stream shows; ``ours, no skipping`` decodes every frame like the
  baseline does, so its overhead is the cost of sampling alone;
- ``baseline``: plain PyAV on the same file: open, seek to the window start
  when ours seeks, decode up to the last frame ours uses, ``to_ndarray``
  (RGB, full resolution, no resize) of exactly the frames ours uses.

All decode with the same decoder threading. Overhead = ours / baseline - 1,
median of ``--runs`` runs each, interleaved so load on a shared machine hits
both alike. Prints the CPU model and a markdown table.

    python benchmarks/video_decode.py [--runs 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

import cotok_edge.data.video as video
from cotok_edge.data.video import STREAMS, load_streams


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_clip(
    path: Path, seconds: float = 10.0, fps: int = 30, w: int = 1280, h: int = 720
) -> None:
    """A textured, moving 720p clip so the decoder does real work (x264 default GOP)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.int32)
    checker = (((xx // 32) + (yy // 32)) % 2 * 50).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            a = np.empty((h, w, 3), np.uint8)
            a[..., 0] = (xx + 6 * i) % 256
            a[..., 1] = (2 * yy + 3 * i) % 256
            a[..., 2] = checker + ((xx * yy // 97 + 5 * i) % 128).astype(np.uint8)
            x0 = 100 + 3 * i
            a[300:420, x0 : x0 + 120] = (255, 255, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def baseline(path: Path, needed: set[int], seek_to: float | None, threads: int) -> int:
    """Plain PyAV: decode until the last needed frame, RGB-convert the needed ones."""
    last = max(needed)
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if threads != 1:
            s.codec_context.thread_type = "AUTO"
        s.codec_context.thread_count = max(0, threads)
        if seek_to is not None:
            c.seek(int(seek_to / s.time_base), stream=s, backward=True)
        for f in c.decode(s):
            if f.pts in needed:
                f.to_ndarray(format="rgb24")
                n += 1
            if f.pts >= last:
                break
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="decoder threads (0 = FFmpeg's choice)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip_720p.mp4"
        t0 = time.perf_counter()
        make_clip(clip)
        gen_s = time.perf_counter() - t0
        with av.open(str(clip)) as c:
            st = c.streams.video[0]
            tb, n_frames = st.time_base, st.frames
        cases = [
            ("whole clip (10 s)", {}),
            ("centre 2 s", {"duration": 2.0}),
            ("window 6-8 s (seek)", {"start": 6.0, "end": 8.0}),
        ]
        rows = []
        for name, kw in cases:
            ref = load_streams(clip, threads=args.threads, **kw)
            needed = {
                int(round(t / tb)) for n in ref.frame_times for t in ref.frame_times[n].tolist()
            }
            # Ours seeks when the window starts later than two frames in.
            seek_to = ref.window[0] if ref.window[0] > 2 / 30 else None
            ours_t, full_t, base_t = [], [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                load_streams(clip, threads=args.threads, **kw)
                ours_t.append(time.perf_counter() - t0)
                video._SKIP_NONREF = False
                try:
                    t0 = time.perf_counter()
                    load_streams(clip, threads=args.threads, **kw)
                    full_t.append(time.perf_counter() - t0)
                finally:
                    video._SKIP_NONREF = True
                t0 = time.perf_counter()
                got = baseline(clip, needed, seek_to, args.threads)
                base_t.append(time.perf_counter() - t0)
            assert got == len(needed), (got, len(needed))
            o, f, b = (statistics.median(x) * 1e3 for x in (ours_t, full_t, base_t))
            rows.append((name, len(needed), b, f, o))
    print(f"CPU: {cpu_model()} ({_cores()} cores visible); PyAV {av.__version__}")
    print(
        f"clip: 1280x720, 30 fps, {n_frames} frames, H.264 (x264 veryfast crf 23), "
        f"generated in {gen_s:.1f} s; streams {STREAMS}; decoder threads={args.threads}; "
        f"median of {args.runs} runs"
    )
    print()
    print(
        "| window | frames used | plain PyAV decode (ms) | ours, no skipping (ms) | overhead "
        "| ours, default (ms) | vs plain |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, nf, b, f, o in rows:
        print(
            f"| {name} | {nf} | {b:.1f} | {f:.1f} | {100 * (f / b - 1):+.1f}% "
            f"| {o:.1f} | {100 * (o / b - 1):+.1f}% |"
        )


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


if __name__ == "__main__":
    main()
