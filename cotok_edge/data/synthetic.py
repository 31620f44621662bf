"""Synthetic VideoQA benchmark whose questions separate what each stream sees.

Each clip is 32 frames of 224x224 at 32 fps (1 s), so the 32-frame stream
sees every frame, the 16-frame stream every other frame and the 8-frame
stream every fourth. A clip holds:

- a **big object** (a coloured circle, square, triangle or cross, 44-56 px
  equal-area side) moving left, right, up or down across the middle;
- three **small objects** (7.5-9.5 px equal-area side, stretched up to
  1.3:1, so 8-16 px across, 12 typical; random rotation, sub-pixel position
  and 75-100 % brightness) of distinct colours and shapes, standing still in
  the free area; one of them **blinks** (vanishes for 1-2 frames) once;
- **lamps** (34 px discs in corners): either one white lamp that blinks
  1-4 times (each blink 1-2 frames, at least 2 frames apart), or two lamps of
  different colours that flash once each, 2-3 frames apart. Lamps are dark
  grey when off, so their colour shows only while they flash.

The four shapes of a small object have **equal area**, so at 64x64 (3.5x
smaller) an object is a 2-5 px blob (3.4 typical) whose total brightness
does not tell its shape, and the random size, stretch, rotation and
brightness hide what shape cues are left. Measured (H.264 CRF 18, decoded through
:func:`cotok_edge.data.video.load_streams`): a 3-layer CNN trained on 2,560
crops centred on the objects (a privilege the model does not have) names
the shape 27 % of the time at 64 px (chance 25 %), 67 % at 112 px and 88 %
at 224 px. Larger objects (9-10.5 px side, no stretch or brightness change)
gave 52 % at 64 px: shape is not lost at 3-4 px by itself.

Questions (one per category per clip), answers single words:

====  ============  ==========================================================
id    category      question (what resolves it)
====  ============  ==========================================================
0     fine space    "what shape is the small {colour} object?" (224 px stream)
1     fine time     "how many times does the white light blink?" or "which
                    light flashes first?" (32-frame stream; 8 frames usually
                    miss 1-frame blinks)
2     both          "what shape is the small object that blinks?" (which blob
                    blinked: 32-frame stream; its shape: 224 px stream; the
                    answer needs the two fused)
3     coarse        the big object's colour, shape or direction (any stream)
====  ============  ==========================================================

Written in the MSRVTT-QA layout: ``videos/video{i}.mp4`` (H.264, yuv420p,
CRF 18 so small objects survive), ``{train,val,test}_qa.json`` (lists of
``{"question", "answer", "video_id", "id", "category_id"}``), plus
``captions.jsonl`` (one narration per training clip: ``{"video_id", "start",
"end", "text"}``; none for validation or test clips, which pre-training must not
see) for caption pre-training, and ``meta.json``. Everything is a
function of the seed: clip ``i`` draws from ``numpy.random.default_rng([seed,
i])`` and the encoder is set up to be deterministic (see
:func:`write_video`), so the same seed gives the same JSON and the same
decoded frames.

    python -m cotok_edge.data.synthetic --out DIR --train N --val N --test N [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

__all__ = [
    "CATEGORIES",
    "COLORS",
    "SHAPES",
    "ClipSpec",
    "draw_clip",
    "generate",
    "generate_subset",
    "make_clip_spec",
    "shape_coverage",
    "write_video",
]

FPS = 32
FRAMES = 32
SIZE = 224

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (30, 175, 60),
    "blue": (45, 90, 240),
    "yellow": (240, 220, 40),
    "orange": (250, 130, 20),
    "purple": (150, 50, 210),
}
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
COUNT_WORDS = ("one", "two", "three", "four")
CATEGORIES = {0: "fine space", 1: "fine time", 2: "both", 3: "coarse"}

LAMP_RADIUS = 17
LAMP_OFF = (45, 45, 45)
LAMP_WHITE = (250, 250, 250)
CORNER = 48  # lamps live in the 48x48 corner squares; nothing else goes there
# Small objects: equal-area side, stretch and brightness ranges. Chosen by
# measurement (see the module docstring): big enough that the 224 px stream
# tells the shapes apart, small and varied enough that the 64 px stream
# cannot.
SMALL_SIDE = (7.5, 9.5)
SMALL_STRETCH = 1.3  # aspect ratio up to 1.3 either way (area kept)
SMALL_BRIGHTNESS = (0.75, 1.0)  # colour scaled by this
BIG_SIDE = (44.0, 56.0)


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------


def _extent(shape: str, side: float) -> float:
    """Radius of a circle enclosing the shape at any rotation."""
    if shape == "circle":
        return side / math.sqrt(math.pi)
    if shape == "square":
        return side / math.sqrt(2.0)
    if shape == "triangle":
        b = side * math.sqrt(2.0)  # base = height = b, area b^2 / 2
        return 2.0 * b / 3.0  # centroid to apex
    if shape == "cross":
        arm = 3.0 * side / math.sqrt(5.0)  # span L, bar width L/3, area 5 L^2 / 9
        return math.hypot(arm / 2, arm / 6)
    raise ValueError(f"unknown shape {shape!r}")


def _inside(shape: str, side: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u right, v down, shape centred at 0) in a shape
    of area ``side ** 2`` (all four shapes have the same area)."""
    if shape == "circle":
        r = side / math.sqrt(math.pi)
        return u * u + v * v <= r * r
    if shape == "square":
        h = side / 2.0
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    if shape == "triangle":
        b = side * math.sqrt(2.0)
        # Apex up, centroid at the origin: base at v = b/3, apex at v = -2b/3.
        rel = (v + 2.0 * b / 3.0) / b  # 0 at the apex, 1 at the base
        return (v <= b / 3.0) & (rel >= 0) & (np.abs(u) <= 0.5 * b * rel)
    if shape == "cross":
        arm = 3.0 * side / math.sqrt(5.0)
        h, t = arm / 2.0, arm / 6.0
        au, av_ = np.abs(u), np.abs(v)
        return ((au <= h) & (av_ <= t)) | ((av_ <= h) & (au <= t))
    raise ValueError(f"unknown shape {shape!r}")


def shape_coverage(
    shape: str,
    side: float,
    angle: float,
    cx: float,
    cy: float,
    stretch: float = 1.0,
    supersample: int = 8,
) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of a shape centred at pixel coordinates (cx, cy).

    Args:
        shape: one of :data:`SHAPES`.
        side: side of the square of equal area (every shape covers side**2 px).
        angle: rotation in radians.
        stretch: aspect ratio; the shape is scaled by sqrt(stretch) along its
            own x axis and 1/sqrt(stretch) along y, so its area is unchanged.
        supersample: samples per pixel along each axis.

    Returns:
        (y0, x0, coverage): coverage float32 ``[h, w]`` in [0, 1] for the
        pixel block whose top-left pixel is (y0, x0); it may extend outside
        the image (see :func:`_paint`).
    """
    q = math.sqrt(stretch)
    r = _extent(shape, side) * max(q, 1.0 / q) + 1.0
    x0, y0 = int(math.floor(cx - r)), int(math.floor(cy - r))
    w = int(math.ceil(cx + r)) - x0 + 1
    h = int(math.ceil(cy + r)) - y0 + 1
    ss = supersample
    xs = x0 + (np.arange(w * ss, dtype=np.float64) + 0.5) / ss - 0.5
    ys = y0 + (np.arange(h * ss, dtype=np.float64) + 0.5) / ss - 0.5
    dx, dy = np.meshgrid(xs - cx, ys - cy)
    c, s = math.cos(angle), math.sin(angle)
    # Rotating and stretching the sample points by the inverse transform
    # places the transformed shape.
    u = (c * dx + s * dy) / q
    v = (-s * dx + c * dy) * q
    inside = _inside(shape, side, u, v).astype(np.float32)
    cov = inside.reshape(h, ss, w, ss).mean(axis=(1, 3))
    return y0, x0, cov


def _paint(img: np.ndarray, y0: int, x0: int, cov: np.ndarray, color: Sequence[float]) -> None:
    """Blend ``color`` into float32 ``img [H, W, 3]`` by ``cov``, clipped to the image."""
    h, w = cov.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, img.shape[0]), min(x0 + w, img.shape[1])
    if ya >= yb or xa >= xb:
        return
    a = cov[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
    region = img[ya:yb, xa:xb]
    region *= 1.0 - a
    region += a * np.asarray(color, np.float32)


# --------------------------------------------------------------------------
# Clip description
# --------------------------------------------------------------------------


@dataclass
class SmallObject:
    """A small static object: shape, colour name, equal-area side (px),
    rotation (rad), centre (px), stretch (aspect) and brightness factor."""

    shape: str
    color: str
    side: float
    angle: float
    cx: float
    cy: float
    stretch: float = 1.0
    brightness: float = 1.0


@dataclass
class ClipSpec:
    """Everything that defines one clip; frames and questions follow from it."""

    background: tuple[float, float, float]
    gradient: tuple[float, float]  # brightness change across x and y
    big_shape: str
    big_color: str
    big_side: float
    direction: str
    big_path: list[tuple[int, int]]  # integer centre per frame
    small: list[SmallObject]
    blinker: int  # index in ``small`` of the object that blinks
    blink_frames: list[int]  # frames in which the blinker is hidden
    lamp_mode: str  # "count" | "order"
    lamps: list[dict[str, Any]] = field(default_factory=list)  # corner, color, on_frames
    fine_target: int = 0  # index in ``small`` asked about in the fine-space question
    coarse_kind: str = "color"  # "color" | "shape" | "direction"


def _corner_centres() -> list[tuple[int, int]]:
    m = CORNER // 2
    return [(m, m), (SIZE - m, m), (m, SIZE - m), (SIZE - m, SIZE - m)]


def _blink_schedule(rng: np.random.Generator, count: int, first: int, last: int) -> list[list[int]]:
    """``count`` blinks of 1-2 frames within [first, last], >= 2 dark frames apart."""
    while True:
        blinks, t = [], int(rng.integers(first, first + 6))
        for _ in range(count):
            length = 1 if rng.random() < 0.75 else 2
            blinks.append(list(range(t, t + length)))
            t += length + int(rng.integers(2, 7))
        if blinks[-1][-1] <= last:
            return blinks


def make_clip_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw one clip's content."""
    grey = float(rng.uniform(70, 115))
    red, green, blue = (float(grey + rng.uniform(-12, 12)) for _ in range(3))
    background = (red, green, blue)
    gradient = (float(rng.uniform(-14, 14)), float(rng.uniform(-14, 14)))
    colors = list(COLORS)

    big_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    big_color = colors[int(rng.integers(len(colors)))]
    big_side = float(rng.uniform(*BIG_SIDE))
    direction = list(DIRECTIONS)[int(rng.integers(4))]
    dx, dy = DIRECTIONS[direction]
    speed = int(rng.integers(2, 4))  # px per frame, integer so the sprite is drawn once
    travel = speed * (FRAMES - 1)
    mx, my = SIZE / 2 + rng.uniform(-8, 8), SIZE / 2 + rng.uniform(-8, 8)
    sx, sy = mx - dx * travel / 2, my - dy * travel / 2
    path = [
        (int(round(sx + dx * speed * i)), int(round(sy + dy * speed * i))) for i in range(FRAMES)
    ]

    # Keep small objects out of the big object's swept box and the corners.
    ext = _extent(big_shape, big_side) + 4
    xs, ys = [p[0] for p in path], [p[1] for p in path]
    busy = [(min(xs) - ext, min(ys) - ext, max(xs) + ext, max(ys) + ext)]
    for cx, cy in _corner_centres():
        busy.append((cx - CORNER / 2, cy - CORNER / 2, cx + CORNER / 2, cy + CORNER / 2))

    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:3]]
    small_colors = [colors[i] for i in rng.permutation(len(colors))[:3]]
    small: list[SmallObject] = []
    while len(small) < 3:
        side = float(rng.uniform(*SMALL_SIDE))
        stretch = float(math.exp(rng.uniform(-1.0, 1.0) * math.log(SMALL_STRETCH)))
        r = _extent(shapes[len(small)], side) * math.sqrt(SMALL_STRETCH) + 3
        cx, cy = float(rng.uniform(r + 2, SIZE - r - 2)), float(rng.uniform(r + 2, SIZE - r - 2))
        if any(x0 - r < cx < x1 + r and y0 - r < cy < y1 + r for x0, y0, x1, y1 in busy):
            continue
        if any(math.hypot(cx - o.cx, cy - o.cy) < 24 for o in small):
            continue
        i = len(small)
        angle = float(rng.uniform(0, 2 * math.pi))
        bright = float(rng.uniform(*SMALL_BRIGHTNESS))
        small.append(SmallObject(shapes[i], small_colors[i], side, angle, cx, cy, stretch, bright))
    blinker = int(rng.integers(3))
    blink_frames = _blink_schedule(rng, 1, 2, FRAMES - 3)[0]

    corners = [int(c) for c in rng.permutation(4)]
    if rng.random() < 0.5:
        count = int(rng.integers(1, 5))
        on = [f for b in _blink_schedule(rng, count, 1, FRAMES - 2) for f in b]
        lamps = [{"corner": corners[0], "color": "white", "on_frames": on, "blinks": count}]
        mode = "count"
    else:
        first = int(rng.integers(2, FRAMES - 8))
        gap = int(rng.integers(2, 4))
        c1, c2 = (colors[i] for i in rng.permutation(len(colors))[:2])
        lamps = [
            {"corner": corners[0], "color": c1, "on_frames": [first], "order": 1},
            {"corner": corners[1], "color": c2, "on_frames": [first + gap], "order": 2},
        ]
        mode = "order"
    return ClipSpec(
        background=background,
        gradient=gradient,
        big_shape=big_shape,
        big_color=big_color,
        big_side=big_side,
        direction=direction,
        big_path=path,
        small=small,
        blinker=blinker,
        blink_frames=blink_frames,
        lamp_mode=mode,
        lamps=lamps,
        fine_target=int(rng.integers(3)),
        coarse_kind=("color", "shape", "direction")[int(rng.integers(3))],
    )


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def draw_clip(spec: ClipSpec) -> np.ndarray:
    """Render a clip: uint8 ``[FRAMES, SIZE, SIZE, 3]`` RGB."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5
    base = np.empty((SIZE, SIZE, 3), np.float32)
    shade = spec.gradient[0] * xx + spec.gradient[1] * yy
    for c in range(3):
        base[..., c] = spec.background[c] + shade
    # Sprites are rasterised once: the big object moves by whole pixels.
    big = shape_coverage(spec.big_shape, spec.big_side, 0.0, 0.0, 0.0)
    small = [shape_coverage(o.shape, o.side, o.angle, o.cx, o.cy, o.stretch) for o in spec.small]
    lamp = shape_coverage("circle", LAMP_RADIUS * math.sqrt(math.pi), 0.0, 0.0, 0.0)
    corners = _corner_centres()

    with_all = base.copy()
    for o, (y0, x0, cov) in zip(spec.small, small, strict=True):
        _paint(with_all, y0, x0, cov, _small_color(o))
    without_blinker = base.copy()
    for i, (o, (y0, x0, cov)) in enumerate(zip(spec.small, small, strict=True)):
        if i != spec.blinker:
            _paint(without_blinker, y0, x0, cov, _small_color(o))

    out = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for f in range(FRAMES):
        img = (without_blinker if f in spec.blink_frames else with_all).copy()
        for lp in spec.lamps:
            cx, cy = corners[lp["corner"]]
            on = f in lp["on_frames"]
            color = (
                (LAMP_WHITE if lp["color"] == "white" else COLORS[lp["color"]]) if on else LAMP_OFF
            )
            _paint(img, lamp[0] + cy, lamp[1] + cx, lamp[2], color)
        px, py = spec.big_path[f]
        _paint(img, big[0] + py, big[1] + px, big[2], COLORS[spec.big_color])
        np.clip(img + 0.5, 0, 255, out=img)
        out[f] = img.astype(np.uint8)
    return out


def _small_color(o: SmallObject) -> tuple[float, float, float]:
    r, g, b = COLORS[o.color]
    return (r * o.brightness, g * o.brightness, b * o.brightness)


def write_video(
    path: str | os.PathLike[str], frames: np.ndarray, fps: int = FPS, crf: int = 18
) -> None:
    """Encode uint8 ``[T, H, W, 3]`` RGB frames as H.264 (yuv420p) in an mp4.

    The bitstream, hence the decoded frames, depend on nothing but the input:
    x264 runs single-threaded and without macroblock-tree rate control, which
    (measured with this x264 build) gave a different bitstream for the same
    frames in about one encode in three."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.thread_count = 1
        s.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "threads": "1",
            "x264-params": "mbtree=0",
        }
        for img in frames:
            for p in s.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            ):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# --------------------------------------------------------------------------
# Questions and captions
# --------------------------------------------------------------------------


def clip_questions(spec: ClipSpec) -> list[tuple[int, str, str]]:
    """(category_id, question, answer) for a clip, one per category."""
    target = spec.small[spec.fine_target]
    qa = [(0, f"what shape is the small {target.color} object?", target.shape)]
    if spec.lamp_mode == "count":
        qa.append(
            (
                1,
                "how many times does the white light blink?",
                COUNT_WORDS[spec.lamps[0]["blinks"] - 1],
            )
        )
    else:
        first = min(spec.lamps, key=lambda lp: lp["on_frames"][0])
        qa.append((1, "which light flashes first?", first["color"]))
    qa.append((2, "what shape is the small object that blinks?", spec.small[spec.blinker].shape))
    if spec.coarse_kind == "color":
        qa.append((3, "what color is the big object?", spec.big_color))
    elif spec.coarse_kind == "shape":
        qa.append((3, "what shape is the big object?", spec.big_shape))
    else:
        qa.append((3, "which way does the big object move?", spec.direction))
    return qa


def clip_caption(spec: ClipSpec) -> str:
    """A narration of the clip's events, HowTo100M-style (lower case, plain)."""
    parts = [f"a big {spec.big_color} {spec.big_shape} moves {spec.direction}"]
    if spec.lamp_mode == "count":
        n = spec.lamps[0]["blinks"]
        parts.append(f"the white light blinks {COUNT_WORDS[n - 1]} time{'s' if n > 1 else ''}")
    else:
        a, b = sorted(spec.lamps, key=lambda lp: lp["on_frames"][0])
        parts.append(f"the {a['color']} light flashes first, then the {b['color']} light")
    objs = [f"a small {o.color} {o.shape}" for o in spec.small]
    parts.append(f"there is {objs[0]}, {objs[1]} and {objs[2]}")
    b = spec.small[spec.blinker]
    parts.append(f"the small {b.color} {b.shape} blinks")
    return ". ".join(parts) + "."


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


def _make_one(job: tuple[str, int, int]) -> tuple[int, list[tuple[int, str, str]], str]:
    out, seed, index = job
    spec = make_clip_spec(np.random.default_rng([seed, index]))
    write_video(Path(out) / "videos" / f"video{index}.mp4", draw_clip(spec))
    return index, clip_questions(spec), clip_caption(spec)


def generate(
    out: str | os.PathLike[str],
    train: int,
    val: int,
    test: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the benchmark to ``out`` (see the module docstring for the layout).

    Clips are numbered across splits (train first), question ids are unique
    across splits. ``workers`` processes render and encode (default: one per
    visible core). Returns a summary: counts, seconds taken.
    """
    if min(train, val, test) < 0:
        raise ValueError(f"split sizes must be >= 0, got train={train} val={val} test={test}")
    n = train + val + test
    splits = {
        "train": range(0, train),
        "val": range(train, train + val),
        "test": range(train + val, n),
    }
    return generate_subset(out, splits, seed, workers, progress)


def generate_subset(
    out: str | os.PathLike[str],
    splits: dict[str, Sequence[int]],
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write only the clips ``splits`` names (``{split: clip indices}``), same layout.

    Clip ``i`` is the same clip as in the full benchmark of this seed (``generate`` with
    ``--train`` + ``--val`` > ``i`` for a test clip, and so on), so a subset reproduces,
    say, the first 100 test clips of ``--train 1200 --val 150 --test 300`` without
    writing the other 1,550. Question ids are unique within the subset (they are only
    those of the full set when the subset starts at clip 0).
    """
    root = Path(out)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    indices = sorted({int(i) for rows in splits.values() for i in rows})
    if indices and indices[0] < 0:
        raise ValueError(f"clip indices must be >= 0, got {indices[0]}")
    jobs = [(str(root), seed, i) for i in indices]
    n = len(jobs)
    if workers is None:
        workers = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        )
    workers = max(1, min(int(workers or 1), max(n, 1)))
    t0 = time.perf_counter()
    results: dict[int, tuple[list[tuple[int, str, str]], str]] = {}
    bar = tqdm(total=n, desc="synthetic clips", unit="clip", disable=not progress)
    if workers == 1:
        for job in jobs:
            i, qa, cap = _make_one(job)
            results[i] = (qa, cap)
            bar.update()
    else:
        # spawn: children must not inherit a parent's torch/OpenMP threads.
        with mp.get_context("spawn").Pool(workers) as pool:
            for i, qa, cap in pool.imap_unordered(_make_one, jobs, chunksize=8):
                results[i] = (qa, cap)
                bar.update()
    bar.close()

    qid = 0
    for split, rows_of in splits.items():
        rows = []
        for i in rows_of:
            for cat, q, ans in results[int(i)][0]:
                rows.append(
                    {
                        "question": q,
                        "answer": ans,
                        "video_id": f"video{i}",
                        "id": qid,
                        "category_id": cat,
                    }
                )
                qid += 1
        (root / f"{split}_qa.json").write_text(json.dumps(rows, indent=1) + "\n")
    # Captions of the training clips only: pre-training must not see an evaluation clip.
    with open(root / "captions.jsonl", "w") as f:
        for i in splits["train"]:
            line = {
                "video_id": f"video{i}",
                "start": 0.0,
                "end": FRAMES / FPS,
                "text": results[i][1],
            }
            f.write(json.dumps(line) + "\n")
    seconds = time.perf_counter() - t0
    meta = {
        "generator": "cotok_edge.data.synthetic",
        "seed": seed,
        "splits": {k: len(v) for k, v in splits.items()},
        "clip_indices": {k: _ranges(v) for k, v in splits.items()},
        "clip": {"frames": FRAMES, "fps": FPS, "size": SIZE, "codec": "h264 yuv420p crf 18"},
        "categories": {str(k): v for k, v in CATEGORIES.items()},
        "answers": {
            "shape": list(SHAPES),
            "color": list(COLORS),
            "direction": list(DIRECTIONS),
            "count": list(COUNT_WORDS),
        },
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return {"clips": n, "questions": qid, "seconds": seconds, "workers": workers}


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    """``[0, 1, 2, 5]`` -> ``[[0, 3], [5, 6]]`` (half-open runs, for meta.json)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([int(i), int(i) + 1])
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m cotok_edge.data.synthetic",
        description="Write the synthetic VideoQA benchmark (MSRVTT-QA layout).",
    )
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--train", type=int, required=True, help="training clips")
    ap.add_argument("--val", type=int, required=True, help="validation clips")
    ap.add_argument("--test", type=int, required=True, help="test clips")
    ap.add_argument(
        "--extra-train", type=int, default=0,
        help="more training clips, numbered after the test clips: the validation and test "
        "splits stay those of --train/--val/--test with this seed",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = ap.parse_args(argv)
    if args.extra_train < 0:
        ap.error(f"--extra-train must be >= 0, got {args.extra_train}")
    if args.extra_train:
        n = args.train + args.val + args.test
        splits = {
            "train": [*range(args.train), *range(n, n + args.extra_train)],
            "val": range(args.train, args.train + args.val),
            "test": range(args.train + args.val, n),
        }
        info = generate_subset(args.out, splits, args.seed, args.workers)
    else:
        info = generate(args.out, args.train, args.val, args.test, args.seed, args.workers)
    print(
        f"wrote {info['clips']} clips, {info['questions']} questions to {args.out} "
        f"in {info['seconds']:.1f} s ({info['workers']} workers)"
    )


if __name__ == "__main__":
    main()
