"""Dataset loaders in their released layouts, their errors, and scoring."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cotok_edge.data.datasets import (
    QARecord,
    accuracy,
    ivqa_score,
    load_captions,
    load_ivqa,
    load_msrvtt_qa,
    load_msvd_qa,
    load_split,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")  # loaders only check that the file is there
    return path


# --------------------------------------------------------------------------
# MSRVTT-QA
# --------------------------------------------------------------------------


@pytest.fixture
def msrvtt(tmp_path: Path) -> Path:
    for i in (0, 7):
        touch(tmp_path / "videos" / f"video{i}.mp4")
    rows = [
        {"question": "what is a man doing?", "answer": "sing", "video_id": "video7", "id": 0,
         "category_id": 0},
        {"question": "who is singing?", "answer": "man", "video_id": 0, "id": 1,
         "category_id": 2},
    ]  # fmt: skip
    (tmp_path / "test_qa.json").write_text(json.dumps(rows))
    return tmp_path


def test_msrvtt_qa_layout(msrvtt: Path) -> None:
    recs = load_msrvtt_qa(msrvtt, "test")
    assert recs == [
        QARecord(msrvtt / "videos/video7.mp4", "what is a man doing?", ["sing"], 0, 0),
        QARecord(msrvtt / "videos/video0.mp4", "who is singing?", ["man"], 1, 2),
    ]
    assert load_split("msrvtt-qa", msrvtt, "test") == recs


def test_msrvtt_qa_errors(msrvtt: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_qa.json"):
        load_msrvtt_qa(msrvtt, "train")
    with pytest.raises(ValueError, match="split"):
        load_msrvtt_qa(msrvtt, "dev")
    rows = json.loads((msrvtt / "test_qa.json").read_text())
    del rows[1]["category_id"]
    (msrvtt / "test_qa.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"test_qa.json: record 1 \(id 1\) has no 'category_id'"):
        load_msrvtt_qa(msrvtt, "test")
    rows[1]["category_id"] = 1
    rows[1]["video_id"] = "video9"
    (msrvtt / "test_qa.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"record 1 \(id 1\): video 'video9' not found"):
        load_msrvtt_qa(msrvtt, "test")
    assert load_msrvtt_qa(msrvtt, "test", check_videos=False)[1].video_path.name == "video9.mp4"
    (msrvtt / "test_qa.json").write_text("{broken")
    with pytest.raises(ValueError, match="test_qa.json: not valid JSON"):
        load_msrvtt_qa(msrvtt, "test")


def test_missing_video_folder(tmp_path: Path) -> None:
    (tmp_path / "val_qa.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="no video folder"):
        load_msrvtt_qa(tmp_path, "val")
    assert load_msrvtt_qa(tmp_path, "val", check_videos=False) == []


# --------------------------------------------------------------------------
# MSVD-QA
# --------------------------------------------------------------------------


@pytest.fixture
def msvd(tmp_path: Path) -> Path:
    touch(tmp_path / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi")
    touch(tmp_path / "YouTubeClips" / "zv2RIbUsnSw_335_341.avi")
    (tmp_path / "youtube_mapping.txt").write_text(
        "-4wsuPCjDBc_5_15 vid1\nzv2RIbUsnSw_335_341 vid2\n"
    )
    rows = [
        {"answer": "animal", "id": 0, "question": "what is chewing on a nut?", "video_id": 1},
        {"answer": "pour", "id": 1, "question": "what does a man do?", "video_id": 2},
    ]
    (tmp_path / "val_qa.json").write_text(json.dumps(rows))
    return tmp_path


def test_msvd_qa_layout(msvd: Path) -> None:
    recs = load_msvd_qa(msvd, "val")
    assert [r.video_path.name for r in recs] == ["-4wsuPCjDBc_5_15.avi", "zv2RIbUsnSw_335_341.avi"]
    assert recs[0].answers == ["animal"] and recs[0].category_id is None
    assert recs[1].question == "what does a man do?" and recs[1].id == 1
    assert load_split("msvd-qa", msvd, "val") == recs


def test_msvd_qa_errors(msvd: Path) -> None:
    rows = json.loads((msvd / "val_qa.json").read_text())
    rows.append({"answer": "cat", "id": 2, "question": "what is it?", "video_id": 5})
    (msvd / "val_qa.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"record 2 \(id 2\): video_id 5 is not in .*mapping"):
        load_msvd_qa(msvd, "val")
    (msvd / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 1\n")
    with pytest.raises(ValueError, match=r"youtube_mapping.txt: line 1"):
        load_msvd_qa(msvd, "val")
    (msvd / "youtube_mapping.txt").unlink()
    with pytest.raises(FileNotFoundError, match="youtube_mapping.txt"):
        load_msvd_qa(msvd, "val")


def test_msvd_qa_missing_clip(msvd: Path) -> None:
    (msvd / "YouTubeClips" / "zv2RIbUsnSw_335_341.avi").unlink()
    with pytest.raises(ValueError, match=r"val_qa.json: record 1 \(id 1\).*zv2RIbUsnSw_335_341"):
        load_msvd_qa(msvd, "val")


# --------------------------------------------------------------------------
# iVQA
# --------------------------------------------------------------------------

IVQA_COLS = ["video_id", "start", "end", "question", *(f"answer{k}" for k in range(1, 6))]


def write_csv(path: Path, rows: list[list[object]], cols: list[str] = IVQA_COLS) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)


@pytest.fixture
def ivqa(tmp_path: Path) -> Path:
    touch(tmp_path / "video" / "aaaaaaaaaaa.mp4")  # the full video: start/end is the window
    touch(tmp_path / "video" / "bbbbbbbbbbb_12_30.mp4")  # already cut: used whole
    write_csv(
        tmp_path / "test.csv",
        [
            ["aaaaaaaaaaa", 4, 19, "what is the man cutting?", "onion", "onion", "onions",
             "garlic", "onion"],
            ["bbbbbbbbbbb", 12, 30, "what tool is used?", "knife", "a knife", "knife",
             "Knife", "blade"],
        ],
    )  # fmt: skip
    return tmp_path


def test_ivqa_layout(ivqa: Path) -> None:
    a, b = load_ivqa(ivqa, "test")
    assert a.video_path == ivqa / "video" / "aaaaaaaaaaa.mp4"
    assert (a.start, a.end) == (4.0, 19.0)
    assert a.answers == ["onion", "onion", "onions", "garlic", "onion"]
    assert a.id == 0 and a.category_id is None
    assert b.video_path.name == "bbbbbbbbbbb_12_30.mp4" and (b.start, b.end) == (None, None)
    assert load_split("ivqa", ivqa, "test") == [a, b]


def test_ivqa_errors(ivqa: Path) -> None:
    cols = [c for c in IVQA_COLS if c != "answer3"]
    write_csv(ivqa / "val.csv", [["aaaaaaaaaaa", 1, 2, "q?", "a", "b", "d", "e"]], cols)
    with pytest.raises(ValueError, match=r"val.csv: missing column 'answer3'"):
        load_ivqa(ivqa, "val")
    write_csv(ivqa / "val.csv", [["aaaaaaaaaaa", 1, 2, "q?", "a", "b", "", "d", "e"]])
    with pytest.raises(ValueError, match=r"val.csv: record 0 \(id 0\) has no 'answer3'"):
        load_ivqa(ivqa, "val")
    write_csv(ivqa / "val.csv", [["aaaaaaaaaaa", "soon", 2, "q?", "a", "b", "c", "d", "e"]])
    with pytest.raises(ValueError, match=r"field 'start' is not a number: 'soon'"):
        load_ivqa(ivqa, "val")
    write_csv(ivqa / "val.csv", [["ccccccccccc", 1, 2, "q?", "a", "b", "c", "d", "e"]])
    with pytest.raises(ValueError, match=r"record 0 \(id 0\): video 'ccccccccccc' not found"):
        load_ivqa(ivqa, "val")


@pytest.mark.parametrize(
    ("pred", "score"),
    [
        ("onion", 1.0),  # 3 of 5 annotators: capped at 1
        ("Onions", 0.5),  # 1 of 5
        ("garlic.", 0.5),
        ("leek", 0.0),
    ],
)
def test_ivqa_metric(pred: str, score: float) -> None:
    assert ivqa_score(pred, ["onion", "onion", "onions", "garlic", "onion"]) == score


def test_ivqa_metric_two_matches_is_full_credit() -> None:
    assert ivqa_score("the knife", ["knife", "a knife", "blade", "saw", "axe"]) == 1.0


# --------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------


def test_captions(tmp_path: Path) -> None:
    touch(tmp_path / "videos" / "abc.mp4")
    touch(tmp_path / "videos" / "xyz.webm")
    lines = [
        {"video_id": "abc", "start": 1.5, "end": 4.0, "text": "now we cut the onion"},
        {"video_id": "xyz", "start": 0, "end": 2, "text": "add salt"},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b = load_captions(tmp_path)
    assert (a.question, a.answers, a.start, a.end) == ("", ["now we cut the onion"], 1.5, 4.0)
    assert b.video_path.name == "xyz.webm" and b.id == 1
    assert load_split("captions", tmp_path) == [a, b]
    with open(tmp_path / "captions.jsonl", "a") as f:
        f.write(json.dumps({"video_id": "abc", "start": 0, "end": 1}) + "\n")
    with pytest.raises(ValueError, match=r"captions.jsonl: record 3 \(id 3\) has no 'text'"):
        load_captions(tmp_path)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_split("kinetics", tmp_path, "train")


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------


def _recs() -> list[QARecord]:
    v = Path("v.mp4")
    return [
        QARecord(v, "q0", ["red"], 10, 0),
        QARecord(v, "q1", ["circle"], 11, 0),
        QARecord(v, "q2", ["two"], 12, 1),
        QARecord(v, "q3", ["left"], 13, 3),
    ]


def test_accuracy_overall_and_per_category() -> None:
    res = accuracy(_recs(), ["Red.", "square", "two", "the left"])
    assert res["accuracy"] == 0.75 and res["count"] == 4
    assert res["per_category"] == {
        0: {"accuracy": 0.5, "count": 2},
        1: {"accuracy": 1.0, "count": 1},
        3: {"accuracy": 1.0, "count": 1},
    }
    by_id = accuracy(_recs(), {10: "red", 11: "circle", 12: "one", 13: "left"})
    assert by_id["accuracy"] == 0.75
    with pytest.raises(ValueError, match="id 13"):
        accuracy(_recs(), {10: "red", 11: "circle", 12: "one"})
    with pytest.raises(ValueError, match="3 predictions for 4 records"):
        accuracy(_recs(), ["a", "b", "c"])


def test_accuracy_ivqa_metric() -> None:
    recs = [
        QARecord(Path("v"), "q", ["onion", "onion", "onions", "garlic", "onion"], 0),
        QARecord(Path("v"), "q", ["knife", "blade", "saw", "axe", "spoon"], 1),
    ]
    res = accuracy(recs, ["garlic", "fork"], metric="ivqa")
    assert res["accuracy"] == 0.25 and res["per_category"] == {}
    assert accuracy(recs, ["garlic", "fork"])["accuracy"] == 0.5  # exact: any answer matches
