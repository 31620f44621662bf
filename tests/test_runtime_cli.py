"""``python -m cotok_edge.answer``: text, JSON, explanation picture, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")

from test_runtime_fixtures import shared_bundle, shared_clips  # noqa: E402

from cotok_edge.answer import main  # noqa: E402
from cotok_edge.runtime import load  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    bundle, clip = shared_bundle(), shared_clips()[0]
    want = load(bundle, backend="onnxruntime", verbose=False).answer(clip.path, clip.questions)
    return bundle, clip, want


def test_prints_the_answer_text_alone(setup, capsys):
    bundle, clip, want = setup
    argv = ["--bundle", str(bundle), "--video", str(clip.path), "--question", clip.questions[0]]
    assert main(argv) == 0
    assert capsys.readouterr().out == want[0].text + "\n"


def test_several_questions_one_line_each(setup, capsys):
    bundle, clip, want = setup
    argv = ["--bundle", str(bundle), "--video", str(clip.path), "--backend", "onnxruntime"]
    for q in clip.questions:
        argv += ["--question", q]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [a.text for a in want]


def test_json_and_explain(setup, capsys, tmp_path):
    bundle, clip, want = setup
    png = tmp_path / "why.png"
    argv = ["--bundle", str(bundle), "--video", str(clip.path), "--question", clip.questions[1],
            "--json", "--explain", str(png)]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == want[1].text
    assert out["score"] == pytest.approx(want[1].score, rel=1e-5)
    assert out["backend"] == "onnxruntime"
    assert set(out["timings_ms"]) >= {"decode", "preprocess", "inference", "postprocess"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sum(out["explanation"]["contributions"].values()) == pytest.approx(1.0)


def test_errors_are_one_line_exit_2(setup, capsys, tmp_path):
    bundle, clip, _ = setup
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 64)
    cases = [
        (["--bundle", str(tmp_path / "none"), "--video", str(clip.path), "--question", "q?"],
         "no such folder"),
        (["--bundle", str(bundle), "--video", str(bad), "--question", "q?"], "bad.mp4"),
        (["--bundle", str(bundle), "--video", str(clip.path), "--question", " "], "empty"),
        (["--bundle", str(bundle), "--video", str(clip.path), "--question", "q?",
          "--backend", "tensorrt"], "no TensorRT engine"),
    ]  # fmt: skip
    for argv, needle in cases:
        assert main(argv) == 2
        cap = capsys.readouterr()
        assert cap.out == ""
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_module_entry_point_exit_code_and_no_traceback(setup, tmp_path):
    bundle, clip, want = setup
    ok = subprocess.run(
        [sys.executable, "-m", "cotok_edge.answer", "--bundle", str(bundle), "--video",
         str(clip.path), "--question", clip.questions[0]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == want[0].text + "\n"
    bad = subprocess.run(
        [sys.executable, "-m", "cotok_edge.answer", "--bundle", str(bundle), "--video",
         str(tmp_path / "missing.mp4"), "--question", "q?"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "missing.mp4" in bad.stderr
