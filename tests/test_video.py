"""Video decoding and stream sampling (cotok_edge.data.video).

Test clips are written with PyAV. Most encode the frame index as the frame's
grey level (``LEVEL0 + STEP * i``) so the sampled frame of every slot can be
read back from its pixels and compared with the frame the timestamps say is
on screen at that instant.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import cotok_edge.data.video as video
from cotok_edge.data.video import (
    STREAMS,
    StreamSpec,
    VideoDecodeError,
    VideoFileNotFoundError,
    load_streams,
    probe_duration,
    sample_frames,
    sample_times,
    stack_streams,
)

LEVEL0, STEP = 10, 7


def level(i: int) -> int:
    return LEVEL0 + STEP * i


def index_of(arr: np.ndarray) -> np.ndarray:
    """Frame index encoded in each frame of a stream ``[3, T, S, S]``."""
    return np.round((arr.astype(np.float64).mean(axis=(0, 2, 3)) - LEVEL0) / STEP).astype(int)


CYCLE = 34  # levels 10..241; longer clips reuse them


def grey_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.stack([np.full((h, w, 3), level(i % CYCLE), np.uint8) for i in range(n)])


def write(
    path: Path,
    frames: np.ndarray,
    fps: int = 32,
    pts_ms: list[int] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    in_fmt: str = "rgb24",
) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        opts = {"crf": "8", "preset": "ultrafast"} if codec == "libx264" else {}
        opts.update(options or {})
        s.options = opts
        if rotation is not None:
            s.set_display_rotation(rotation)
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
            s.time_base = Fraction(1, 1000)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=in_fmt)
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clip32(tmp_path_factory) -> Path:
    """32 frames at 32 fps (1 s), 64x48, x264 with B-frames."""
    return write(tmp_path_factory.mktemp("v") / "clip32.mp4", grey_frames(32))


def expected_indices(frame_starts: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each instant: last start <= t (first frame before it)."""
    return np.clip(np.searchsorted(frame_starts, instants, side="right") - 1, 0, None)


def test_shapes_dtypes_and_one_window_for_all_streams(clip32: Path) -> None:
    s = load_streams(clip32)
    assert s.window == pytest.approx((0.0, 1.0))
    assert s.names() == [n for n, _, _ in STREAMS]
    for name, t, size in STREAMS:
        assert s[name].shape == (3, t, size, size)
        assert s[name].dtype == np.uint8
        # Bin centres of the same window, for every stream.
        np.testing.assert_allclose(s.times[name], (np.arange(t) + 0.5) / t)
    # 32 fps: s1 sees every frame, s2 every other (odd), s3 every fourth (2, 6, ...).
    np.testing.assert_array_equal(index_of(s["s1"]), np.arange(32))
    np.testing.assert_array_equal(index_of(s["s2"]), np.arange(16) * 2 + 1)
    np.testing.assert_array_equal(index_of(s["s3"]), np.arange(8) * 4 + 2)
    for name in s.names():
        np.testing.assert_allclose(s.frame_times[name], index_of(s[name]) / 32)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate_uses_real_timestamps(tmp_path: Path, ext: str) -> None:
    pts = [0, 30, 60, 200, 210, 220, 500, 510, 900, 1000]
    path = write(tmp_path / f"vfr.{ext}", grey_frames(len(pts)), fps=30, pts_ms=pts)
    s = load_streams(path)
    # MP4 declares a DTS-based duration (0.6 s here); the window must still
    # reach the last frame at 1.0 s.
    assert s.window[1] > 1.0
    starts = np.array(pts) / 1000.0
    for name in s.names():
        want = expected_indices(starts, s.times[name])
        np.testing.assert_array_equal(index_of(s[name]), want, err_msg=name)
        np.testing.assert_allclose(s.frame_times[name], starts[want])


def reference_indices(path: Path, instants: np.ndarray, origin: float) -> np.ndarray:
    """Plain PyAV, every frame decoded: content index of the frame on screen at each instant."""
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        shown = [
            (float(f.pts * st.time_base) - origin, f.to_ndarray(format="gray"))
            for f in c.decode(st)
        ]
    starts = np.array([t for t, _ in shown])
    content = np.array([round((g.mean() - LEVEL0) / STEP) for _, g in shown])
    return content[expected_indices(starts, instants)]


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [
        ("ts", "libx264", {"preset": "veryfast", "g": "8"}),  # no keyframe index: seek lands badly
        ("mov", "libx264", {"preset": "veryfast", "g": "8"}),
        ("mkv", "mpeg4", {"b": "4M", "bf": "2", "g": "8"}),
        ("avi", "mpeg4", {"b": "4M", "bf": "2", "g": "8"}),  # B-frames packed, pts guessed
    ],
)
def test_containers_and_codecs_agree_with_plain_decoding(
    tmp_path: Path, name: str, codec: str, options: dict[str, str]
) -> None:
    path = write(tmp_path / f"clip.{name}", grey_frames(48), codec=codec, options=options)
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        origin = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
    for kw in ({}, {"start": 0.55, "end": 1.2}):
        s = load_streams(path, **kw)
        for n in s.names():
            want = reference_indices(path, s.times[n], origin)
            np.testing.assert_array_equal(index_of(s[n]), want, err_msg=f"{n} {kw}")


def test_short_clip_repeats_last_frame(tmp_path: Path) -> None:
    path = write(tmp_path / "short.mp4", grey_frames(8))  # 0.25 s
    s = load_streams(path, start=0.0, end=1.0)
    np.testing.assert_array_equal(index_of(s["s1"]), np.minimum(np.arange(32), 7))
    np.testing.assert_array_equal(index_of(s["s3"]), [2, 6, 7, 7, 7, 7, 7, 7])
    # A centred window longer than the clip starts at 0 and holds the last frame.
    c = load_streams(path, duration=2.0)
    assert c.window == (0.0, 2.0)
    assert index_of(c["s1"])[-1] == 7
    # The whole clip of a short clip samples it evenly, no repetition needed.
    w = load_streams(path)
    np.testing.assert_array_equal(index_of(w["s3"]), np.arange(8))


@pytest.fixture(scope="module")
def clip96(tmp_path_factory) -> Path:
    """96 frames at 32 fps (3 s), keyframe every 16 frames so seeking is real."""
    return write(
        tmp_path_factory.mktemp("v") / "clip96.mp4",
        grey_frames(96),
        options={"g": "16", "bf": "3"},
    )


def test_window_start_end_and_centre(clip96: Path) -> None:
    s = load_streams(clip96, start=1.5, end=2.5)
    assert s.window == (1.5, 2.5)
    np.testing.assert_allclose(s.times["s1"], 1.5 + (np.arange(32) + 0.5) / 32)
    got = 48 + np.arange(32)  # frames shown at 1.5 + (i + 0.5) / 32
    np.testing.assert_array_equal(index_of(s["s1"]), got % CYCLE)
    np.testing.assert_allclose(s.frame_times["s1"], got / 32)
    np.testing.assert_allclose(s.frame_times["s3"], (48 + np.arange(8) * 4 + 2) / 32)
    c = load_streams(clip96, duration=1.0)
    assert c.window == pytest.approx((1.0, 2.0))
    np.testing.assert_allclose(c.frame_times["s1"], (32 + np.arange(32)) / 32)
    e = load_streams(clip96, end=0.5)
    np.testing.assert_allclose(e.frame_times["s1"], np.arange(32) // 2 / 32)
    with pytest.raises(ValueError, match="past the end"):
        load_streams(clip96, start=5.0, end=6.0)
    with pytest.raises(ValueError, match="after its start"):
        load_streams(clip96, start=2.0, end=1.0)
    with pytest.raises(ValueError, match="not both"):
        load_streams(clip96, start=1.0, duration=1.0)


def test_skipping_unused_frames_changes_nothing(clip96: Path, monkeypatch) -> None:
    """Dropping unused B-frames in the decoder must not change any output pixel."""
    for kw in ({}, {"start": 1.2, "end": 2.9}, {"duration": 0.7}):
        fast = load_streams(clip96, **kw)
        threaded = load_streams(clip96, threads=0, **kw)
        monkeypatch.setattr(video, "_SKIP_NONREF", False)
        full = load_streams(clip96, **kw)
        monkeypatch.setattr(video, "_SKIP_NONREF", True)
        for name in full.names():
            np.testing.assert_array_equal(fast[name], full[name])
            np.testing.assert_array_equal(threaded[name], full[name])
            np.testing.assert_array_equal(fast.frame_times[name], full.frame_times[name])


def test_non_square_frames_resize_short_side_and_centre_crop(tmp_path: Path) -> None:
    # 160x90: red | green | blue with the green band exactly the centre square.
    img = np.zeros((90, 160, 3), np.uint8)
    img[:, :35] = (220, 30, 30)
    img[:, 35:125] = (30, 200, 30)
    img[:, 125:] = (30, 30, 220)
    s = load_streams(write(tmp_path / "wide.mp4", np.stack([img] * 4), fps=4))
    for name in s.names():
        a = s[name].astype(int)
        size = a.shape[-1]
        m = size // 16 + 1  # 4:2:0 chroma and resampling blur the band edges by ~5 source px
        inner = a[:, :, :, m : size - m]
        assert inner[1].min() > 150 and inner[0].max() < 90 and inner[2].max() < 90, name
    # Portrait 90x160: the same band horizontally.
    port = np.ascontiguousarray(img.transpose(1, 0, 2))
    p = load_streams(write(tmp_path / "tall.mp4", np.stack([port] * 4), fps=4))
    a = p["s3"].astype(int)[:, :, 15:-15]
    assert a[1].min() > 150 and a[0].max() < 90


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="writing rotation metadata for the fixture needs PyAV 18 (set_display_rotation)",
)
@pytest.mark.parametrize(
    ("rotation", "white_side"), [(90, "left"), (-90, "right"), (180, "bottom")]
)
def test_rotation_metadata_turns_frames_upright(
    tmp_path: Path, rotation: int, white_side: str
) -> None:
    img = np.zeros((96, 128, 3), np.uint8)
    img[:48] = 255  # top half of the coded frame is white
    path = write(tmp_path / "rot.mp4", np.stack([img] * 4), fps=4, rotation=rotation)
    a = load_streams(path)["s2"][0, 0].astype(int)  # [112, 112], red channel, first frame
    halves = {
        "left": (a[:, :50], a[:, 62:]),
        "right": (a[:, 62:], a[:, :50]),
        "bottom": (a[62:], a[:50]),
    }[white_side]
    assert halves[0].min() > 200 and halves[1].max() < 50


def test_grayscale_and_10_bit_sources(tmp_path: Path) -> None:
    grey = grey_frames(8)[..., 0]
    g = write(tmp_path / "gray.mkv", grey, fps=8, codec="ffv1", pix_fmt="gray", in_fmt="gray")
    s = load_streams(g)
    a = s["s3"].astype(int)
    assert (a[0] == a[1]).all() and (a[1] == a[2]).all()  # grey stays grey, in RGB
    np.testing.assert_array_equal(index_of(s["s3"]), np.arange(8))
    ten = write(tmp_path / "ten.mp4", grey_frames(8), fps=8, pix_fmt="yuv420p10le")
    with av.open(str(ten)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    np.testing.assert_array_equal(
        index_of(load_streams(ten)["s2"]), np.arange(0, 8, 0.5).astype(int)
    )


def test_custom_stream_specs(clip32: Path) -> None:
    class Cfg:  # anything with name/frames/size, like the model's StreamConfig
        def __init__(self, name: str, frames: int, size: int):
            self.name, self.frames, self.size = name, frames, size

    s = load_streams(clip32, streams=[("a", 4, 32), StreamSpec("b", 2, 16), Cfg("c", 1, 8)])
    assert {k: v.shape for k, v in s.arrays.items()} == {
        "a": (3, 4, 32, 32),
        "b": (3, 2, 16, 16),
        "c": (3, 1, 8, 8),
    }
    np.testing.assert_array_equal(index_of(s["a"]), [4, 12, 20, 28])
    with pytest.raises(ValueError, match="unique"):
        load_streams(clip32, streams=[("a", 4, 32), ("a", 2, 16)])


def test_in_memory_frames_use_the_same_sampler(clip32: Path) -> None:
    frames = grey_frames(32)
    m = sample_frames(frames, fps=32)
    f = load_streams(clip32)
    for name in f.names():
        np.testing.assert_array_equal(index_of(m[name]), index_of(f[name]))
        np.testing.assert_allclose(m.times[name], f.times[name])
        assert np.abs(m[name].astype(int) - f[name].astype(int)).max() <= 3
    # Variable frame rate through timestamps, relative to the first one.
    pts = np.array([0, 30, 60, 200, 210, 220, 500, 510, 900, 1000]) / 1000 + 5.0
    v = sample_frames(grey_frames(10), timestamps=pts, fps=30)
    for name in v.names():
        np.testing.assert_array_equal(
            index_of(v[name]), expected_indices(pts - 5.0, v.times[name]), err_msg=name
        )
    # Grayscale [N, H, W] and a window.
    g = sample_frames(grey_frames(64)[..., 0], fps=32, start=1.0, end=2.0)
    np.testing.assert_array_equal(index_of(g["s1"]), (32 + np.arange(32)) % CYCLE)
    assert (g["s1"][0] == g["s1"][2]).all()
    with pytest.raises(ValueError, match="uint8"):
        sample_frames(grey_frames(4).astype(np.float32), fps=4)
    with pytest.raises(ValueError, match="fps"):
        sample_frames(grey_frames(4))
    with pytest.raises(ValueError, match="non-decreasing"):
        sample_frames(grey_frames(3), timestamps=[0.0, 0.2, 0.1])


def test_in_memory_planar_resize_matches_the_rgb_path() -> None:
    # The in-memory sampler scales to planar GBR (the model's channels-first layout);
    # it must give the same bytes as the file path's rgb24 resize and crop for RGB frames.
    rng = np.random.default_rng(7)
    for shape in [(5, 90, 160, 3), (5, 224, 224, 3), (5, 70, 50), "bgr view"]:
        if shape == "bgr view":  # a view whose rows are not C-contiguous
            shape = (5, 90, 160, 3)
            frames = rng.integers(0, 256, shape, dtype=np.uint8)[..., ::-1]
        else:
            frames = rng.integers(0, 256, shape, dtype=np.uint8)
        got = sample_frames(frames, fps=5, streams=[("a", 5, 32), ("b", 5, 64)])
        fmt = "rgb24" if len(shape) == 4 else "gray"
        for name, size in (("a", 32), ("b", 64)):
            for t in range(5):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[t]), format=fmt)
                want = video._to_square(frame, size, 1.0, 0)
                # Grey goes through another libswscale conversion: within one level.
                np.testing.assert_allclose(
                    got[name][:, t].astype(int),
                    want.transpose(2, 0, 1).astype(int),
                    atol=0 if fmt == "rgb24" else 1,
                    err_msg=f"{shape} {name} {t}",
                )


def test_stack_streams_batches_clips(clip32: Path) -> None:
    a, b = load_streams(clip32), load_streams(clip32, start=0.5, end=1.0)
    batch = stack_streams([a, b])
    for name, t, size in STREAMS:
        assert batch[name].shape == (2, 3, t, size, size)
        np.testing.assert_array_equal(batch[name][1], b[name])
    other = load_streams(clip32, streams=[("x", 2, 8)])
    with pytest.raises(ValueError, match="streams"):
        stack_streams([a, other])


def test_probe_duration(clip32: Path, tmp_path: Path) -> None:
    assert probe_duration(clip32) == pytest.approx(1.0)
    with pytest.raises(VideoFileNotFoundError):
        probe_duration(tmp_path / "nope.mp4")


def test_sample_times_are_bin_centres() -> None:
    np.testing.assert_allclose(sample_times(2.0, 4.0, 4), [2.25, 2.75, 3.25, 3.75])


# --------------------------------------------------------------------------
# Errors: always VideoDecodeError (a ValueError) naming the file
# --------------------------------------------------------------------------


def _raises_naming(path: Path, match: str, **kw) -> VideoDecodeError:
    with pytest.raises(VideoDecodeError, match=match) as info:
        load_streams(path, **kw)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    err = _raises_naming(tmp_path / "nope.mp4", "no such file")
    assert isinstance(err, VideoFileNotFoundError) and isinstance(err, FileNotFoundError)


def test_not_a_media_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    _raises_naming(text, "not a readable media file")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _raises_naming(empty, "not a readable media file")
    _raises_naming(tmp_path, "directory")


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for _ in range(4):
            fr = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            fr.sample_rate = 16000
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    _raises_naming(path, "no video stream")


def _mkv(tmp_path: Path, n: int = 64, noise: bool = False) -> bytes:
    frames = (
        np.random.default_rng(0).integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)
        if noise
        else grey_frames(n)
    )
    return write(tmp_path / "src.mkv", frames).read_bytes()


def test_zero_decodable_frames(tmp_path: Path) -> None:
    data = _mkv(tmp_path)
    cluster = data.find(bytes.fromhex("1F43B675"))  # first Matroska cluster: no frame data after
    path = tmp_path / "headers_only.mkv"
    path.write_bytes(data[: cluster + 4])
    _raises_naming(path, "zero decodable frames")
    _raises_naming(path, "zero decodable frames", start=0.0, end=0.5)


def test_truncated_file(tmp_path: Path) -> None:
    data = _mkv(tmp_path, noise=True)  # declares 2 s
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path, "truncated")
    _raises_naming(path, "truncated", start=1.5, end=1.9)
    # A window that ends before the cut is still readable.
    assert load_streams(path, start=0.0, end=0.25)["s1"].shape == (3, 32, 64, 64)
    # An MP4 with its index first loses frame data instead.
    mp4 = write(
        tmp_path / "fast.mp4",
        np.random.default_rng(1).integers(0, 256, (64, 48, 64, 3), dtype=np.uint8),
        options={"movflags": "+faststart"},
    )
    raw = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(raw[: len(raw) // 2])
    _raises_naming(cut, "truncated|corrupt")


def test_corrupt_data(tmp_path: Path) -> None:
    data = bytearray(_mkv(tmp_path, noise=True))
    mid = len(data) // 2
    data[mid : mid + len(data) // 5] = (
        np.random.default_rng(2).integers(0, 256, len(data) // 5, dtype=np.uint8).tobytes()
    )
    path = tmp_path / "corrupt.mkv"
    path.write_bytes(bytes(data))
    _raises_naming(path, "corrupt|truncated")


def test_errors_never_leak_pyav_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(VideoDecodeError) as info:
        load_streams(path)
    assert not isinstance(info.value, av.FFmpegError)
