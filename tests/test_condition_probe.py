"""``python -m benchmarks.condition_probe``: what a stream's map can be conditioned through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.condition_probe import main, question_spread, run
from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.data.subset import main as subset_main
from cotok_edge.data.synthetic import generate
from cotok_edge.data.text import save_tokenizer, train_tokenizer


def test_question_spread_measures_how_far_apart_the_distinct_questions_are() -> None:
    mask = torch.ones(4, 3, dtype=torch.bool)
    words = torch.zeros(4, 3, 2)
    words[:, :, 0] = 1.0
    words[2:, 2, 1] = 3.0  # questions 2 and 3 differ from 0 and 1 in one word
    part = {"words": words, "encoded": torch.ones(4, 3, 2), "mask": mask, "c0": words[:, 0]}
    spread = question_spread(part, torch.tensor([0, 0, 1, 1]))
    assert spread["mean encoder output"] == 0.0 and spread["c0"] == 0.0
    # Mean word embeddings (1, 0) and (1, 1): std (0, 0.707) over mean norm (1 + 1.414) / 2.
    assert spread["mean word embedding"] == pytest.approx(0.7071 / 1.2071, rel=1e-3)


def test_trains_every_read_and_reuses_the_features(tmp_path: Path) -> None:
    synth = tmp_path / "synth"
    generate(synth, train=14, val=2, test=2, seed=5, workers=1, progress=False)
    probe = tmp_path / "probe"
    assert subset_main(["--data", str(synth), "--category", "0", "--holdout", "3",
                        "--out", str(probe)]) == 0  # fmt: skip
    records = json.loads((synth / "train_qa.json").read_text())
    texts = [r["question"] for r in records] + [r["answer"] for r in records]
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    tokenizer = train_tokenizer(texts, 200)
    cfg = CoTokConfig.preset("tiny")
    cfg.text.vocab_size = max(cfg.text.vocab_size, tokenizer.get_vocab_size())
    model = CoTokVQA(cfg)
    model.save_pretrained(model_dir)
    save_tokenizer(tokenizer, model_dir / "tokenizer.json")
    out = tmp_path / "probe.json"
    args = ["--model", str(model_dir), "--data", str(probe), "--cache-dir",
            str(tmp_path / "cache"), "--steps", "2", "--batch", "4", "--eval-every", "1",
            "--out", str(out)]  # fmt: skip
    main([*args, "--png", str(tmp_path / "probe.png")])
    assert (tmp_path / "probe.png").stat().st_size > 0
    result = json.loads(out.read_text())
    assert [r["condition"] for r in result["runs"]] == ["state", "words", "oracle"]
    assert all(len(r["curve"]) == 2 for r in result["runs"])
    assert result["question_spread"]["mean word embedding"] > 0.0
    features = sorted(p.name for p in tmp_path.glob("probe.features.*.safetensors"))
    assert features == ["probe.features.train.safetensors", "probe.features.val.safetensors"]
    stamp = [p.stat().st_mtime_ns for p in tmp_path.glob("probe.features.*")]
    main([*args[:-2], "--conditions", "model", "--out", str(out)])
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("probe.features.*")] == stamp
    # The model's own map is read as it is: training the head leaves the model's weights.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = load_file(str(tmp_path / "probe.features.train.safetensors"))
    n = train["x"].shape[0]
    train.update(question=torch.zeros(n, dtype=torch.long), answer=torch.arange(n) % 4)
    curve = run(model, "s3", "model", train, train, 3, 2, 1e-2, 0, 1)["curve"]
    assert len(curve) == 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # --save-model: the model, with s3's map conditioned on the words and taken from the read.
    saved = tmp_path / "with_read"
    main([*args[:-2], "--conditions", "words", "--out", str(out), "--save-model", str(saved)])
    mapped = CoTokVQA.from_pretrained(saved)
    assert [c.token_condition for c in mapped.config.streams] == ["state", "state", "words"]
    new, old = mapped.state_dict(), model.state_dict()
    moved = {k for k in old if not torch.equal(new[k], old[k])}
    assert moved and all(k.startswith("cotokenizer.tokenlearners.s3.") for k in moved)
    assert (saved / "tokenizer.json").read_text() == (model_dir / "tokenizer.json").read_text()
    with pytest.raises(SystemExit, match="exists"):
        main([*args[:-2], "--conditions", "words", "--out", str(out), "--save-model", str(saved)])
    with pytest.raises(SystemExit, match="needs --conditions words"):
        main([*args, "--save-model", str(tmp_path / "other")])
    # Features made from one model are not read for another.
    with pytest.raises(SystemExit, match="made for"):
        main([*args[:1], str(saved), *args[2:]])
    with pytest.raises(SystemExit, match="--stream s9"):
        main([*args, "--stream", "s9"])
