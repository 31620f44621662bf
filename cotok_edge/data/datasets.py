"""Dataset loaders (MSRVTT-QA, MSVD-QA, iVQA, captions JSONL) and scoring.

Every loader returns a list of :class:`QARecord`. Layouts, as released:

MSRVTT-QA (Xu et al. 2017; also what ``cotok_edge.data.synthetic`` writes)::

    root/{train,val,test}_qa.json   [{"question", "answer", "video_id", "id", "category_id"}]
    root/videos/video{i}.mp4        (or root/video/)

  ``video_id`` is ``"video12"`` or the bare integer ``12`` (the original
  release uses integers).

MSVD-QA (Xu et al. 2017)::

    root/{train,val,test}_qa.json   [{"question", "answer", "video_id", "id"}]
    root/youtube_mapping.txt        lines "<clip name> vid<N>", e.g. "-4wsuPCjDBc_5_15 vid1"
    root/YouTubeClips/<clip name>.avi   (MSVD's own folder; or root/videos/, root/video/)

  ``video_id`` is the integer N of ``vid<N>``.

iVQA (Yang et al. 2021, "Just Ask")::

    root/{train,val,test}.csv       columns video_id, start, end, question, answer1..answer5
    root/video/<video_id>.mp4  or  root/video/<video_id>_<start>_<end>.mp4   (or root/videos/)

  ``start``/``end`` (seconds) are kept as the record's window when the file is
  the full YouTube video; a file already cut to ``<id>_<start>_<end>`` is used
  whole.

Captions (HowTo100M-style pre-training)::

    root/captions.jsonl             one {"video_id", "start", "end", "text"} per line
    root/videos/<video_id>.<ext>

  A caption record has an empty question and the caption as its answer.

Missing files raise ``FileNotFoundError`` naming the path; malformed records
raise ``ValueError`` naming the file, the record's index and id and the field.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .text import normalize_answer

__all__ = [
    "FORMATS",
    "QARecord",
    "accuracy",
    "ivqa_score",
    "load_captions",
    "load_split",
    "load_ivqa",
    "load_msrvtt_qa",
    "load_msvd_qa",
]

FORMATS = ("msrvtt-qa", "msvd-qa", "ivqa", "captions")
SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass
class QARecord:
    """One question about one clip.

    Attributes:
        video_path: the video file.
        question: the question text ("" for caption pre-training).
        answers: accepted answers (one for MSRVTT-QA / MSVD-QA / captions,
            the five annotators' answers for iVQA).
        id: the question's id in its file (the row index where the file has none).
        category_id: question type (MSRVTT-QA; the synthetic benchmark's
            categories), None where the dataset has none.
        start, end: window in seconds inside the video, None for the whole clip.
    """

    video_path: Path
    question: str
    answers: list[str]
    id: int | str
    category_id: int | None = None
    start: float | None = None
    end: float | None = None


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _split_name(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _video_dir(
    root: Path,
    video_dir: str | os.PathLike[str] | None,
    names: Sequence[str],
    required: bool = True,
) -> Path:
    """The video folder: ``video_dir`` (relative to ``root``) or the first of
    ``names`` that exists; without ``required``, the first name regardless."""
    if video_dir is not None:
        d = Path(video_dir)
        d = d if d.is_absolute() else root / d
        if required and not d.is_dir():
            raise FileNotFoundError(f"video folder not found: {d}")
        return d
    for n in names:
        if (root / n).is_dir():
            return root / n
    if not required:
        return root / names[0]
    tried = ", ".join(str(root / n) for n in names)
    raise FileNotFoundError(f"no video folder in {root} (looked for {tried})")


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _field(path: Path, i: int, rec: Mapping[str, Any], name: str, rid: Any = None) -> Any:
    """``rec[name]``, or a ValueError naming the file, record index, id and field.
    ``rid`` is the id to report when the record has no ``id`` field."""
    if not isinstance(rec, Mapping):
        raise ValueError(f"{path}: record {i} is a {type(rec).__name__}, not an object")
    if (
        name not in rec
        or rec[name] is None
        or (isinstance(rec[name], str) and name != "question" and not rec[name].strip())
    ):
        rid = rec.get("id", "?" if rid is None else rid)
        raise ValueError(f"{path}: record {i} (id {rid}) has no {name!r} field")
    return rec[name]


def _as_int(path: Path, i: int, rid: Any, name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: record {i} (id {rid}) field {name!r} is not an integer: {value!r}"
        ) from None


def _as_float(path: Path, i: int, rid: Any, name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: record {i} (id {rid}) field {name!r} is not a number: {value!r}"
        ) from None
    return None if math.isnan(v) else v


class _VideoIndex:
    """File stems in a video folder, listed once (folders hold 10^4 files)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.by_stem: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem not in self.by_stem:
                self.by_stem[p.stem] = p

    def find(self, stem: str) -> Path | None:
        return self.by_stem.get(stem)


def _missing_video(
    path: Path, i: int, rid: Any, video_id: Any, folder: Path, want: str
) -> ValueError:
    return ValueError(
        f"{path}: record {i} (id {rid}): video {video_id!r} not found (expected {want} in {folder})"
    )


# --------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------


def load_msrvtt_qa(
    root: str | os.PathLike[str],
    split: str,
    video_dir: str | os.PathLike[str] | None = None,
    check_videos: bool = True,
) -> list[QARecord]:
    """MSRVTT-QA ``{split}_qa.json`` (see the module docstring).

    ``check_videos`` verifies that every referenced video file exists.
    """
    root = Path(root)
    path = _need_file(root / f"{_split_name(split)}_qa.json", "MSRVTT-QA annotation file")
    data = _read_json_list(path)
    vdir = _video_dir(root, video_dir, ("videos", "video"), check_videos)
    index = _VideoIndex(vdir) if check_videos else None
    out = []
    for i, rec in enumerate(data):
        q = _field(path, i, rec, "question")
        a = _field(path, i, rec, "answer")
        vid = _field(path, i, rec, "video_id")
        rid = _field(path, i, rec, "id")
        cat = _as_int(path, i, rid, "category_id", _field(path, i, rec, "category_id"))
        stem = f"video{vid}" if isinstance(vid, int) or str(vid).isdigit() else str(vid)
        if index is not None:
            vp = index.find(stem)
            if vp is None:
                raise _missing_video(path, i, rid, vid, vdir, f"{stem}.mp4")
        else:
            vp = vdir / f"{stem}.mp4"
        out.append(QARecord(vp, str(q), [str(a)], rid, cat))
    return out


def load_msvd_qa(
    root: str | os.PathLike[str],
    split: str,
    video_dir: str | os.PathLike[str] | None = None,
    check_videos: bool = True,
) -> list[QARecord]:
    """MSVD-QA ``{split}_qa.json`` + ``youtube_mapping.txt`` (see the module docstring)."""
    root = Path(root)
    path = _need_file(root / f"{_split_name(split)}_qa.json", "MSVD-QA annotation file")
    mpath = _need_file(root / "youtube_mapping.txt", "MSVD-QA video mapping file")
    mapping: dict[int, str] = {}
    for ln, line in enumerate(mpath.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("vid") or not parts[1][3:].isdigit():
            raise ValueError(f"{mpath}: line {ln} is not '<clip name> vid<N>': {line!r}")
        mapping[int(parts[1][3:])] = parts[0]
    data = _read_json_list(path)
    vdir = _video_dir(root, video_dir, ("YouTubeClips", "videos", "video"), check_videos)
    index = _VideoIndex(vdir) if check_videos else None
    out = []
    for i, rec in enumerate(data):
        q = _field(path, i, rec, "question")
        a = _field(path, i, rec, "answer")
        rid = _field(path, i, rec, "id")
        raw = _field(path, i, rec, "video_id")
        key = str(raw)[3:] if str(raw).startswith("vid") else raw
        n = _as_int(path, i, rid, "video_id", key)
        name = mapping.get(n)
        if name is None:
            raise ValueError(f"{path}: record {i} (id {rid}): video_id {raw!r} is not in {mpath}")
        if index is not None:
            vp = index.find(name)
            if vp is None:
                raise _missing_video(path, i, rid, raw, vdir, f"{name}.avi")
        else:
            vp = vdir / f"{name}.avi"
        out.append(QARecord(vp, str(q), [str(a)], rid, None))
    return out


IVQA_ANSWERS = tuple(f"answer{k}" for k in range(1, 6))


def load_ivqa(
    root: str | os.PathLike[str],
    split: str,
    video_dir: str | os.PathLike[str] | None = None,
    check_videos: bool = True,
) -> list[QARecord]:
    """iVQA ``{split}.csv`` (see the module docstring). Records carry the five
    annotators' answers; score them with ``accuracy(..., metric="ivqa")``."""
    root = Path(root)
    path = _need_file(root / f"{_split_name(split)}.csv", "iVQA annotation file")
    vdir = _video_dir(root, video_dir, ("video", "videos"), check_videos)
    index = _VideoIndex(vdir) if check_videos else None
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        for col in ("video_id", "question", *IVQA_ANSWERS):
            if col not in cols:
                raise ValueError(f"{path}: missing column {col!r} (has {sorted(cols)})")
        for i, row in enumerate(reader):
            rid: int | str = row.get("qid") or row.get("id") or i
            q = _field(path, i, row, "question", rid)
            vid = str(_field(path, i, row, "video_id", rid))
            answers = [str(_field(path, i, row, c, rid)) for c in IVQA_ANSWERS]
            start = _as_float(path, i, rid, "start", row.get("start"))
            end = _as_float(path, i, rid, "end", row.get("end"))
            vp = None
            if index is not None:
                vp = index.find(vid)
                if vp is None and start is not None and end is not None:
                    for stem in _cut_names(vid, start, end):
                        vp = index.find(stem)
                        if vp is not None:
                            start = end = None  # the file is already the clip
                            break
                if vp is None:
                    raise _missing_video(path, i, rid, vid, vdir, f"{vid}.mp4")
            else:
                vp = vdir / f"{vid}.mp4"
            out.append(QARecord(vp, str(q), answers, rid, None, start, end))
    return out


def _cut_names(vid: str, start: float, end: float) -> list[str]:
    """Stems a pre-cut clip may have: ``<id>_<start>_<end>`` with the times as
    integers or as written in floats."""
    forms = []
    for s, e in ((start, end),):
        for fs, fe in ((f"{s:g}", f"{e:g}"), (str(int(s)), str(int(e))), (str(s), str(e))):
            stem = f"{vid}_{fs}_{fe}"
            if stem not in forms:
                forms.append(stem)
    return forms


def load_captions(
    root: str | os.PathLike[str],
    video_dir: str | os.PathLike[str] | None = None,
    check_videos: bool = True,
    filename: str = "captions.jsonl",
) -> list[QARecord]:
    """Caption pre-training records from ``captions.jsonl`` (see the module docstring)."""
    root = Path(root)
    path = _need_file(root / filename, "captions file")
    vdir = _video_dir(root, video_dir, ("videos", "video"), check_videos)
    index = _VideoIndex(vdir) if check_videos else None
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e})") from e
            vid = str(_field(path, i, rec, "video_id", i))
            text = str(_field(path, i, rec, "text", i))
            start = _as_float(path, i, i, "start", _field(path, i, rec, "start", i))
            end = _as_float(path, i, i, "end", _field(path, i, rec, "end", i))
            if index is not None:
                vp = index.find(vid)
                if vp is None:
                    raise _missing_video(path, i, i, vid, vdir, f"{vid}.mp4")
            else:
                vp = vdir / f"{vid}.mp4"
            out.append(QARecord(vp, "", [text], i, None, start, end))
    return out


def load_split(
    fmt: str,
    root: str | os.PathLike[str],
    split: str = "train",
    video_dir: str | os.PathLike[str] | None = None,
    check_videos: bool = True,
) -> list[QARecord]:
    """Dispatch on ``fmt`` (one of :data:`FORMATS`); captions ignore ``split``."""
    if fmt == "msrvtt-qa":
        return load_msrvtt_qa(root, split, video_dir, check_videos)
    if fmt == "msvd-qa":
        return load_msvd_qa(root, split, video_dir, check_videos)
    if fmt == "ivqa":
        return load_ivqa(root, split, video_dir, check_videos)
    if fmt == "captions":
        return load_captions(root, video_dir, check_videos)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------


def ivqa_score(prediction: str, answers: Sequence[str]) -> float:
    """iVQA: ``min(1, matches / 2)``, matches = annotator answers equal to the
    prediction after :func:`normalize_answer`."""
    p = normalize_answer(prediction)
    matches = sum(normalize_answer(a) == p for a in answers)
    return min(1.0, matches / 2.0)


def _exact(prediction: str, answers: Sequence[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(normalize_answer(a) == p for a in answers))


def accuracy(
    records: Sequence[QARecord],
    predictions: Sequence[str] | Mapping[Any, str],
    metric: str = "exact",
) -> dict[str, Any]:
    """Score predictions, overall and per ``category_id``.

    Args:
        predictions: one string per record (same order), or a mapping from
            record id to string (every record's id must be in it).
        metric: ``"exact"`` (normalised exact match with any accepted answer;
            MSRVTT-QA, MSVD-QA) or ``"ivqa"`` (:func:`ivqa_score`).

    Returns:
        ``{"accuracy": float, "count": int, "per_category": {category_id:
        {"accuracy": float, "count": int}}}``; ``per_category`` is empty when
        no record has a category.
    """
    score = {"exact": _exact, "ivqa": ivqa_score}.get(metric)
    if score is None:
        raise ValueError(f"metric must be 'exact' or 'ivqa', got {metric!r}")
    if isinstance(predictions, Mapping):
        missing = [r.id for r in records if r.id not in predictions]
        if missing:
            raise ValueError(f"no prediction for {len(missing)} record(s), e.g. id {missing[0]!r}")
        preds = [predictions[r.id] for r in records]
    else:
        if len(predictions) != len(records):
            raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
        preds = list(predictions)
    total = 0.0
    per: dict[int, list[float]] = {}
    for r, p in zip(records, preds, strict=True):
        s = score(p, r.answers)
        total += s
        if r.category_id is not None:
            per.setdefault(r.category_id, []).append(s)
    n = len(records)
    return {
        "accuracy": total / n if n else 0.0,
        "count": n,
        "per_category": {
            c: {"accuracy": sum(v) / len(v), "count": len(v)} for c, v in sorted(per.items())
        },
    }
