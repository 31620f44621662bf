"""Synthetic VideoQA benchmark (cotok_edge.data.synthetic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from cotok_edge.data.datasets import load_captions, load_msrvtt_qa
from cotok_edge.data.synthetic import (
    CATEGORIES,
    COLORS,
    COUNT_WORDS,
    DIRECTIONS,
    FRAMES,
    SHAPES,
    SIZE,
    SMALL_SIDE,
    SMALL_STRETCH,
    _corner_centres,
    clip_questions,
    draw_clip,
    generate,
    main,
    make_clip_spec,
    shape_coverage,
)
from cotok_edge.data.video import STREAMS, load_streams

ALL_FRAMES = (("all", FRAMES, SIZE),)  # every source frame at full size


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, train=3, val=1, test=1, seed=7, workers=1, progress=False)
    return out


def test_layout_and_question_format(bench: Path) -> None:
    vocab = set(SHAPES) | set(COLORS) | set(DIRECTIONS) | set(COUNT_WORDS)
    seen_ids, per_split = set(), {}
    for split in ("train", "val", "test"):
        rows = json.loads((bench / f"{split}_qa.json").read_text())
        per_split[split] = rows
        for r in rows:
            assert set(r) == {"question", "answer", "video_id", "id", "category_id"}
            assert r["video_id"].startswith("video") and r["video_id"][5:].isdigit()
            assert r["answer"] in vocab and " " not in r["answer"]
            assert r["id"] not in seen_ids
            seen_ids.add(r["id"])
        by_clip: dict[str, list[int]] = {}
        for r in rows:
            by_clip.setdefault(r["video_id"], []).append(r["category_id"])
        assert all(sorted(c) == sorted(CATEGORIES) for c in by_clip.values())
    assert len(per_split["train"]) == 3 * len(CATEGORIES)
    assert {r["video_id"] for r in per_split["test"]} == {"video4"}
    # The MSRVTT-QA loader reads it as is.
    recs = load_msrvtt_qa(bench, "val")
    recs_train = load_msrvtt_qa(bench, "train")
    assert [r.video_path.name for r in recs] == ["video3.mp4"] * 4
    caps = load_captions(bench)  # the training clips' only
    assert len(caps) == 3 and all(c.question == "" and c.end == 1.0 for c in caps)
    assert {c.video_path.name for c in caps} == {r.video_path.name for r in recs_train}
    meta = json.loads((bench / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["clip"]["fps"] == 32
    with av.open(str(bench / "videos" / "video0.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", SIZE, SIZE)
        assert s.frames == FRAMES and float(s.average_rate) == 32.0


def test_same_seed_same_json_and_frames(bench: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    main(["--out", str(again), "--train", "3", "--val", "1", "--test", "1", "--seed", "7"])
    for name in ("train_qa.json", "val_qa.json", "test_qa.json", "captions.jsonl"):
        assert (again / name).read_bytes() == (bench / name).read_bytes(), name
    for i in range(5):
        a = load_streams(bench / "videos" / f"video{i}.mp4", streams=ALL_FRAMES)
        b = load_streams(again / "videos" / f"video{i}.mp4", streams=ALL_FRAMES)
        np.testing.assert_array_equal(a["all"], b["all"])
    other = tmp_path / "other"
    generate(other, train=3, val=1, test=1, seed=8, workers=1, progress=False)
    assert (other / "train_qa.json").read_bytes() != (bench / "train_qa.json").read_bytes()


def test_decoded_clip_is_the_drawn_clip(bench: Path) -> None:
    """CRF 18 keeps the drawing: frames decode close to what was drawn (4:2:0
    chroma blurs colour edges, hence the loose tail), small objects included."""
    spec = make_clip_spec(np.random.default_rng([7, 0]))
    drawn = draw_clip(spec).astype(int)
    got = load_streams(bench / "videos" / "video0.mp4", streams=ALL_FRAMES)["all"]
    got = got.transpose(1, 2, 3, 0).astype(int)
    diff = np.abs(got - drawn)
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 20
    for o in spec.small:
        cx, cy = int(round(o.cx)), int(round(o.cy))
        shown = [
            f
            for f in range(FRAMES)
            if not (o is spec.small[spec.blinker] and f in spec.blink_frames)
        ]
        assert np.abs(got[shown, cy, cx] - drawn[shown, cy, cx]).max() < 20


def _specs(n: int, seed: int = 0):
    return [make_clip_spec(np.random.default_rng([seed, i])) for i in range(n)]


def test_small_objects_are_tiny_and_equal_in_area() -> None:
    lo, hi = SMALL_SIDE
    for shape in SHAPES:
        for side in (lo, hi):
            for stretch in (1 / SMALL_STRETCH, 1.0, SMALL_STRETCH):
                for angle in (0.0, 0.4, math.pi / 4, 1.3):
                    _, _, cov = shape_coverage(shape, side, angle, 50.3, 60.7, stretch)
                    # Equal area, so a blurred blob's brightness does not tell the shape.
                    assert cov.sum() == pytest.approx(side * side, rel=0.02)
                    ys, xs = np.nonzero(cov > 0.25)
                    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
                    # <= 16 px at 224, i.e. <= 4.6 px in the 64 px stream; >= 7 px so
                    # the 224 px stream has something to see.
                    assert 7 <= extent <= 16, (shape, side, stretch, angle, extent)


def test_small_objects_are_a_few_pixels_in_the_64_stream(bench: Path) -> None:
    spec = make_clip_spec(np.random.default_rng([7, 1]))
    s1 = load_streams(bench / "videos" / "video1.mp4", streams=[STREAMS[0]])["s1"]
    img = s1[:, 0].astype(int)  # [3, 64, 64], first frame
    bg = np.array(spec.background)
    for o in spec.small:
        if 0 in spec.blink_frames and o is spec.small[spec.blinker]:
            continue
        cx, cy = o.cx * 64 / SIZE, o.cy * 64 / SIZE
        y0, x0 = int(cy) - 4, int(cx) - 4
        patch = img[:, y0 : y0 + 9, x0 : x0 + 9]
        differs = np.abs(patch - bg[:, None, None]).max(axis=0) > 25
        ys, xs = np.nonzero(differs)
        assert len(ys) > 0  # visible as a blob ...
        assert np.ptp(ys) + 1 <= 5 and np.ptp(xs) + 1 <= 5  # ... of at most 5x5 px


def lamp_on(frames: np.ndarray, corner: int) -> np.ndarray:
    """[T] bool: is the lamp in ``corner`` lit in each frame ``[T, H, W, 3]``."""
    cx, cy = _corner_centres()[corner]
    centre = frames[:, cy - 4 : cy + 4, cx - 4 : cx + 4].astype(int)
    return centre.max(axis=-1).mean(axis=(1, 2)) > 120  # off is (45, 45, 45)


def runs(on: np.ndarray) -> int:
    return int(np.sum(on[1:] & ~on[:-1]) + on[0])


def test_fine_time_questions_need_the_32_frame_stream() -> None:
    specs = [s for s in _specs(60) if s.lamp_mode == "count"]
    assert len(specs) >= 15
    s3_frames = np.arange(8) * 4 + 2  # what the 8-frame stream samples of 32
    complete = 0
    for spec in specs:
        frames = draw_clip(spec)
        on = lamp_on(frames, spec.lamps[0]["corner"])
        answer = dict((c, a) for c, _, a in clip_questions(spec))[1]
        assert COUNT_WORDS[runs(on) - 1] == answer  # countable from all 32 frames
        lengths = np.diff(np.flatnonzero(np.diff(np.r_[0, on.astype(int), 0])))[::2]
        assert lengths.max() <= 2  # each blink lasts 1-2 frames
        complete += runs(on[s3_frames]) == runs(on)
    # The 8-frame stream usually miscounts.
    assert complete / len(specs) < 0.35


def test_order_question_flashes_are_close_in_time() -> None:
    for spec in [s for s in _specs(40) if s.lamp_mode == "order"]:
        first, second = sorted(spec.lamps, key=lambda lp: lp["on_frames"][0])
        assert 2 <= second["on_frames"][0] - first["on_frames"][0] <= 3
        frames = draw_clip(spec)
        for lp in spec.lamps:
            assert np.flatnonzero(lamp_on(frames, lp["corner"])).tolist() == lp["on_frames"]
        assert dict((c, a) for c, _, a in clip_questions(spec))[1] == first["color"]


def test_both_question_blinker_vanishes_briefly() -> None:
    for spec in _specs(10):
        frames = draw_clip(spec).astype(int)
        o = spec.small[spec.blinker]
        cx, cy = int(round(o.cx)), int(round(o.cy))
        here = np.abs(frames[:, cy - 1 : cy + 2, cx - 1 : cx + 2] - np.array(spec.background))
        gone = here.max(axis=(1, 2, 3)) < 30  # only background at its centre
        assert np.flatnonzero(gone).tolist() == spec.blink_frames
        assert 1 <= len(spec.blink_frames) <= 2
        answer = dict((c, a) for c, _, a in clip_questions(spec))[2]
        assert answer == o.shape


def test_big_object_moves_as_stated() -> None:
    for spec in _specs(12):
        frames = draw_clip(spec).astype(int)
        col = np.array(COLORS[spec.big_color])
        pos = []
        for f in (0, FRAMES - 1):
            mask = np.abs(frames[f] - col).max(axis=-1) < 12
            # Small objects may share the colour: keep the big blob by size.
            ys, xs = np.nonzero(mask)
            assert len(ys) > 500
            pos.append((np.median(xs), np.median(ys)))
        dx, dy = pos[1][0] - pos[0][0], pos[1][1] - pos[0][1]
        want = DIRECTIONS[spec.direction]
        assert np.sign(round(dx / 20)) == want[0] and np.sign(round(dy / 20)) == want[1]


def test_rejects_negative_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split sizes"):
        generate(tmp_path, train=-1, val=0, test=0, progress=False)


def test_extra_training_clips_keep_the_evaluation_splits(bench: Path, tmp_path: Path) -> None:
    more = tmp_path / "more"
    main(["--out", str(more), "--train", "3", "--val", "1", "--test", "1", "--seed", "7",
          "--extra-train", "2", "--workers", "1"])  # fmt: skip

    def rows(folder: Path, split: str) -> list[tuple[str, str, str]]:
        data = json.loads((folder / f"{split}_qa.json").read_text())
        return [(r["video_id"], r["question"], r["answer"]) for r in data]

    for split in ("val", "test"):  # the same clips, questions and answers as without extras
        assert rows(more, split) == rows(bench, split)
    train = rows(more, "train")
    assert train[: len(rows(bench, "train"))] == rows(bench, "train")
    assert {v for v, _, _ in train} == {f"video{i}" for i in (0, 1, 2, 5, 6)}
    # Extras are numbered after the test clips: clip 5 is the clip 5 of a larger benchmark.
    a = load_streams(more / "videos" / "video5.mp4", streams=ALL_FRAMES)
    bigger = tmp_path / "bigger"
    generate(bigger, train=6, val=0, test=0, seed=7, workers=1, progress=False)
    b = load_streams(bigger / "videos" / "video5.mp4", streams=ALL_FRAMES)
    np.testing.assert_array_equal(a["all"], b["all"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--train", "1", "--val", "0", "--test", "0",
              "--extra-train", "-1"])  # fmt: skip
