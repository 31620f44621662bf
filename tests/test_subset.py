"""``python -m cotok_edge.data.subset``: a one-question training set for a curriculum phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotok_edge.data.datasets import load_split
from cotok_edge.data.subset import main
from cotok_edge.data.synthetic import generate

QUESTION = "what color is the big object?"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, train=12, val=2, test=2, seed=5, workers=1, progress=False)
    return root


def test_keeps_one_question_in_order_and_holds_out_the_last(synth: Path, tmp_path: Path) -> None:
    source = json.loads((synth / "train_qa.json").read_text())
    asking = [r for r in source if r["question"] == QUESTION]
    assert len(asking) >= 3
    out = tmp_path / "probe"
    assert (
        main(["--data", str(synth), "--question", QUESTION, "--holdout", "2", "--out", str(out)])
        == 0
    )

    train = json.loads((out / "train_qa.json").read_text())
    val = json.loads((out / "val_qa.json").read_text())
    assert train + val == asking and len(val) == 2
    assert json.loads((out / "test_qa.json").read_text()) == []
    assert (out / "videos").resolve() == (synth / "videos").resolve()
    # The loader the training CLI uses reads it, videos included.
    records = load_split("msrvtt-qa", out, "train")
    assert {r.question for r in records} == {QUESTION}
    assert all(Path(r.video_path).is_file() for r in records)
    assert not list(tmp_path.glob(".probe.tmp-*"))


def test_bad_input_is_refused_by_name(synth: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "probe"
    base = ["--data", str(synth), "--out", str(out)]
    with pytest.raises(SystemExit):
        main([*base, "--question", "what is the airspeed of a swallow?"])
    assert "no training record asks it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--question", QUESTION, "--holdout", "100000"])
    assert "--holdout 100000" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--question", QUESTION, "--holdout", "1"]) == 0
    with pytest.raises(SystemExit):  # no overwrite without --force
        main([*base, "--question", QUESTION, "--holdout", "0"])
    assert "--force" in capsys.readouterr().err
    assert main([*base, "--question", QUESTION, "--holdout", "0", "--force"]) == 0
    assert json.loads((out / "val_qa.json").read_text()) == []


def test_a_category_keeps_every_wording_of_one_kind_of_question(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = json.loads((synth / "train_qa.json").read_text())
    fine_space = [r for r in source if r["category_id"] == 0]
    assert len({r["question"] for r in fine_space}) > 1  # several colours asked about
    out = tmp_path / "space"
    assert main(["--data", str(synth), "--category", "0", "--holdout", "3", "--out", str(out)]) == 0
    train = json.loads((out / "train_qa.json").read_text())
    val = json.loads((out / "val_qa.json").read_text())
    assert train + val == fine_space and len(val) == 3
    with pytest.raises(SystemExit):
        main(["--data", str(synth), "--category", "7", "--out", str(tmp_path / "none")])
    assert "--category 7: no training record has it; category ids: ['0', '1', '2', '3']" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # one of the two, not both
        main(["--data", str(synth), "--category", "0", "--question", QUESTION,
              "--out", str(tmp_path / "both")])  # fmt: skip
