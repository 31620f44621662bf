"""Training and evaluation end to end on a few synthetic clips (tiny preset, real streams)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cotok_edge import CoTokConfig, CoTokVQA
from cotok_edge.data.clips import StreamCache, group_by_clip
from cotok_edge.data.datasets import load_split
from cotok_edge.data.prepare import main as prepare_main
from cotok_edge.data.synthetic import generate
from cotok_edge.data.video import StreamSpec
from cotok_edge.evaluate import BlankedStreams
from cotok_edge.evaluate import main as evaluate_main
from cotok_edge.train import (
    UNCAPPED_STEPS,
    ClipBatches,
    drop_streams,
    lr_at,
    param_groups,
    parse_args,
    parse_question_weight,
    question_weights,
    training_answer,
)
from cotok_edge.train import main as train_main

COMMON = ["--format", "msrvtt-qa", "--preset", "tiny", "--clips", "2", "--eval-every", "1000"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, train=4, val=2, test=2, seed=3, workers=1, progress=False)
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


@pytest.mark.parametrize("dropout", [[], ["--stream-dropout", "0.5"]], ids=["plain", "dropout"])
def test_resume_is_exact(synth: Path, tmp_path: Path, dropout: list[str]) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache"), "--data", str(synth), *dropout]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_main([*COMMON, *cache, "--out", str(straight), "--steps", "3"]) == 0
    assert (
        train_main([*COMMON, *cache, "--out", str(resumed), "--steps", "3", "--stop-at", "2"]) == 0
    )
    assert not (resumed / "model").exists()  # stopped early: no final model yet
    assert train_main([*COMMON, *cache, "--out", str(resumed), "--steps", "3", "--resume"]) == 0
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").open()]
    assert len(losses) == 3
    assert (straight / "model" / "tokenizer.json").is_file()
    if importlib.util.find_spec("matplotlib") is not None:  # the plot is optional
        assert (straight / "learning_curve.png").stat().st_size > 0


def test_parallel_decoding_and_clips_held_on_the_device_change_nothing(
    synth: Path, tmp_path: Path
) -> None:
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    common = [*COMMON, "--data", str(synth), "--steps", "2"]
    assert train_main([*common, "--out", str(serial), "--cache-dir", str(tmp_path / "c1")]) == 0
    assert (
        train_main(
            [
                *common,
                "--out",
                str(parallel),
                "--cache-dir",
                str(tmp_path / "c2"),
                "--decode-workers",
                "2",
                "--cache-on-device",
            ]
        )  # fmt: skip
        == 0
    )
    keys = sorted(p.name for p in (tmp_path / "c1").iterdir() if p.is_dir())
    assert keys == sorted(p.name for p in (tmp_path / "c2").iterdir() if p.is_dir())
    sizes = set()
    for key in keys:  # the training clips' cache and the validation clips'
        for name in ("s1", "s2", "s3"):
            a, b = (np.load(tmp_path / c / key / f"{name}.npy") for c in ("c1", "c2"))
            assert a.any() and np.array_equal(a, b), (key, name)
            sizes.add(a.shape[0])
    assert sizes == {4, 2}
    a, b = _weights(serial), _weights(parallel)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_prepare_decodes_the_splits_that_runs_then_find_ready(
    synth: Path, tmp_path: Path, capsys
) -> None:
    cache = tmp_path / "cache"
    argv = ["--data", str(synth), "--format", "msrvtt-qa", "--cache-dir", str(cache)]
    assert prepare_main([*argv, "--workers", "2"]) == 0
    built = sorted(p.name for p in cache.iterdir())
    assert len(built) == 3 and not any(n.startswith(".build") for n in built)
    run = tmp_path / "run"
    assert train_main([*COMMON, "--data", str(synth), "--out", str(run), "--steps", "1",
                       "--cache-dir", str(cache)]) == 0  # fmt: skip
    assert sorted(p.name for p in cache.iterdir()) == built  # nothing decoded again
    with pytest.raises(SystemExit):
        prepare_main([*argv, "--splits", "nosuch"])
    assert "--splits nosuch: " in capsys.readouterr().err


def test_a_decoding_worker_that_cannot_start_is_an_error_not_a_hang(
    synth: Path, tmp_path: Path
) -> None:
    # Spawned workers re-import the parent's main script: one read from stdin cannot be.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cotok_edge.data.clips import StreamCache, group_by_clip\n"
        "from cotok_edge.data.datasets import load_split\n"
        "from cotok_edge.data.video import StreamSpec\n"
        "clips = group_by_clip(load_split('msrvtt-qa', Path(sys.argv[1]), 'train'))\n"
        "specs = [StreamSpec('s1', 32, 64)]\n"
        "StreamCache(clips, specs, Path(sys.argv[2]), show_progress=False, workers=2)\n"
    )
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-", str(synth), str(cache)], input=script, capture_output=True,
        text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "StreamCache: a decoding worker died" in proc.stderr
    assert not list(cache.iterdir())  # the half-built cache was removed


def test_a_time_budget_ends_the_run_with_the_schedule_decayed(
    synth: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # A clock that moves one second each time the run reads it: the same steps on any machine.
    ticks = iter(range(10**6))
    monkeypatch.setattr("cotok_edge.train._clock", lambda: float(next(ticks)))
    run = tmp_path / "budget"
    argv = [*COMMON, "--data", str(synth), "--out", str(run), "--cache-dir", str(tmp_path / "c"),
            "--warmup", "1", "--time-budget", "12", "--eval-by-question"]  # fmt: skip
    assert train_main(argv) == 0
    assert f"/{UNCAPPED_STEPS}" not in capsys.readouterr().err  # the bar shows no step total
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 6 and records[-1]["budget_end"]  # two readings a step, t0 = 0
    assert "eval" in records[-1]  # the run's end is evaluated like a last step
    asked = {r.question for r in load_split("msrvtt-qa", synth, "val")}
    per_question = records[-1]["eval"]["per_question"]
    assert set(per_question) == asked
    assert sum(q["count"] for q in per_question.values()) == records[-1]["eval"]["count"]
    lrs = [r["lr"] for r in steps[1:]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.5 * 1e-3
    state = json.loads((run / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == len(steps)
    with pytest.raises(SystemExit):  # a wall-clock schedule cannot be replayed
        parse_args([*argv, "--force", "--stop-at", "3"])
    # Without the budget the step count is 1000; with it, only a --steps given caps the run.
    unbudgeted = [a for a in argv if a not in ("--time-budget", "12")]
    assert parse_args([*unbudgeted, "--force"]).steps == 1000
    assert parse_args([*argv, "--force", "--steps", "3"]).steps == 3


def test_refuses_to_overwrite_a_run(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    with pytest.raises(SystemExit):
        parse_args(["--data", str(synth), "--format", "msrvtt-qa", "--out", str(run)])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cotok-steps", "-2"], "--cotok-steps must be at least 1, got -2"),
        (["--cotok-steps", "0"], "--cotok-steps must be at least 1, got 0"),
        (["--time-groups", "0"], "--time-groups must be at least 1, got 0"),
        (["--tokens-per-stream", "-1"], "--tokens-per-stream must be at least 1, got -1"),
        (["--init-backbone", "s1"], "expected STREAM=CHECKPOINT"),
        (["--init-backbone", "s1=no/such/run"], "no/such/run is not a checkpoint"),
    ],
)
def test_model_overrides_below_one_are_refused(
    synth: Path, tmp_path: Path, capsys, flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", str(synth), "--format", "msrvtt-qa", "--out", str(tmp_path), *flags])
    assert message in capsys.readouterr().err


def test_model_overrides_are_validated_with_the_whole_config(synth: Path, tmp_path: Path) -> None:
    # 3 does not divide the 32 frames of s1's feature grid: the config says so, by name.
    with pytest.raises(SystemExit, match="time_groups: 3 does not divide the 32 time steps"):
        train_main([*COMMON, "--data", str(synth), "--out", str(tmp_path / "r"), "--steps", "1",
                    "--time-groups", "3"])  # fmt: skip
    run = tmp_path / "k2"
    args = [*COMMON, "--data", str(synth), "--out", str(run), "--steps", "1"]
    assert train_main([*args, "--cotok-steps", "2", "--cache-dir", str(tmp_path / "c")]) == 0
    assert json.loads((run / "model" / "config.json").read_text())["steps"] == 2
    with pytest.raises(SystemExit):
        parse_args([*args, "--init", str(run / "model"), "--cotok-steps", "3", "--force"])
    with pytest.raises(SystemExit):  # a trained checkpoint's initialisation is its weights
        parse_args([*args, "--init", str(run / "model"), "--zero-init-residual", "--force"])


def test_a_finer_stem_keeps_the_stream_output_grid(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "stem"
    args = [*COMMON, "--data", str(synth), "--steps", "1", "--cache-dir", str(tmp_path / "c")]
    assert train_main([*args, "--out", str(run), "--stream-stem-stride", "s3=2"]) == 0
    cfg = CoTokConfig.from_dict(json.loads((run / "model" / "config.json").read_text()))
    tiny = {s.name: s for s in CoTokConfig.preset("tiny").streams}
    for s in cfg.streams:
        assert s.feature_grid == tiny[s.name].feature_grid
        assert (s.stem_stride, s.spatial_strides) == (
            (2, (1, 2, 2, 2)) if s.name == "s3" else (4, tiny[s.name].spatial_strides)
        )
    for bad, message in [("s3=3", "does not divide"), ("s9=2", "no stream 's9'")]:
        with pytest.raises(SystemExit, match=message):
            train_main([*args, "--out", str(tmp_path / "bad"), "--stream-stem-stride", bad])
    with pytest.raises(SystemExit):  # a checkpoint fixes its backbones
        parse_args([*args, "--out", str(tmp_path / "i"), "--init", str(run / "model"),
                    "--stream-stem-stride", "s3=2"])  # fmt: skip


def test_stream_stem_kind_and_width_reach_the_saved_config(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "pool"
    args = [*COMMON, "--data", str(synth), "--steps", "1", "--cache-dir", str(tmp_path / "c")]
    flags = ["--stream-stem", "s3=pool", "--stream-stem-channels", "s3=16"]
    assert train_main([*args, "--out", str(run), *flags]) == 0
    cfg = CoTokConfig.from_dict(json.loads((run / "model" / "config.json").read_text()))
    tiny = {s.name: s for s in CoTokConfig.preset("tiny").streams}
    for s in cfg.streams:
        want = ("pool", 16) if s.name == "s3" else ("conv", tiny[s.name].stem_channels)
        assert (s.stem, s.stem_channels) == want
        assert s.feature_grid == tiny[s.name].feature_grid
    with pytest.raises(SystemExit, match="--stream-stem s9=pool: no stream 's9'"):
        train_main([*args, "--out", str(tmp_path / "bad"), "--stream-stem", "s9=pool"])
    for bad, message in [(["--stream-stem", "s3=patch"], "KIND one of ('conv', 'pool')"),
                         (["--stream-stem-channels", "s3=x"], "expected STREAM=C")]:  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args([*args, "--out", str(tmp_path / "bad"), *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a checkpoint fixes its backbones
        parse_args([*args, "--out", str(tmp_path / "i"), "--init", str(run / "model"), *flags])


def test_max_tokens_token_pool_and_condition_flags_build_them_or_add_them_to_a_checkpoint(
    synth: Path, tmp_path: Path
) -> None:
    args = [*COMMON, "--data", str(synth), "--steps", "1", "--cache-dir", str(tmp_path / "c")]
    plain, added, fresh = tmp_path / "plain", tmp_path / "added", tmp_path / "fresh"
    assert train_main([*args, "--out", str(plain)]) == 0
    init = ["--init", str(plain / "model"), "--max-tokens", "--stream-token-pool", "s3=max",
            "--stream-token-condition", "s3=words"]  # fmt: skip
    assert train_main([*args, "--out", str(added), *init]) == 0
    assert train_main([*args, "--out", str(fresh), "--max-tokens"]) == 0
    before = load_file(str(plain / "model" / "model.safetensors"))["cotokenizer.video_pos"]
    for run in (added, fresh):
        cfg = CoTokConfig.from_dict(json.loads((run / "model" / "config.json").read_text()))
        assert cfg.max_tokens and cfg.max_video_tokens() > 0
        pos = load_file(str(run / "model" / "model.safetensors"))["cotokenizer.video_pos"]
        assert pos.shape == (before.shape[0] + cfg.max_video_tokens(), cfg.dim)
    pools = CoTokConfig.from_dict(json.loads((added / "model" / "config.json").read_text()))
    assert [s.token_pool for s in pools.streams] == ["softmax", "softmax", "max"]
    assert [s.token_condition for s in pools.streams] == ["state", "state", "words"]
    assert "cotokenizer.word_proj.weight" in load_file(str(added / "model" / "model.safetensors"))
    with pytest.raises(SystemExit):  # a projection comes only with a backbone
        parse_args([*args, "--out", str(tmp_path / "p"), "--init-backbone-projection"])


def test_question_weights_match_by_regex_first_rule_wins(synth: Path) -> None:
    clips = group_by_clip(load_split("msrvtt-qa", synth, "train"))
    rules = [parse_question_weight("how many|flashes first=3"), parse_question_weight("WHAT=0.5")]
    weights = question_weights(clips, rules)
    for clip, w in zip(clips, weights, strict=True):
        assert w.shape == (len(clip.questions),)
        for q, got in zip(clip.questions, w.tolist(), strict=True):
            want = 3.0 if ("how many" in q or "flashes first" in q) else 0.5 if "what" in q else 1.0
            assert got == want, q
    with pytest.raises(ValueError, match="'no such question': matches no training question"):
        question_weights(clips, [parse_question_weight("no such question=2")])


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("what", "expected REGEX=W"),
        ("what=x", "W='x' is not a number"),
        ("what=-1", "W must be finite and >= 0"),
        ("what=nan", "W must be finite and >= 0"),
        ("(what=2", "bad regular expression"),
    ],
)
def test_bad_question_weights_are_refused(
    synth: Path, tmp_path: Path, capsys, flag: str, message: str
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", str(synth), "--format", "msrvtt-qa", "--out", str(tmp_path),
                    "--question-weight", flag])  # fmt: skip
    assert message in capsys.readouterr().err


def test_weighted_loss_is_the_plain_mean_at_weight_one_and_drops_weight_zero() -> None:
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny")).eval()
    inputs = model.example_inputs(3)
    answers = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0], [8, 9, 10, 2]])
    with torch.no_grad():
        plain = model(**inputs, answer_ids=answers).loss
        ones = model(**inputs, answer_ids=answers, loss_weight=torch.ones(3)).loss
        twos = model(**inputs, answer_ids=answers, loss_weight=torch.full((3,), 2.0)).loss
        first_two = model(**inputs, answer_ids=answers, loss_weight=torch.tensor([1.0, 1.0, 0.0]))
        alone = model(
            **{k: v[:2] for k, v in inputs.items()}, answer_ids=answers[:2, :3]
        ).loss  # the same two questions without the third
    torch.testing.assert_close(ones, plain)
    torch.testing.assert_close(twos, plain)
    torch.testing.assert_close(first_two.loss, alone)
    with torch.no_grad():
        none = model(**inputs, answer_ids=answers, loss_weight=torch.zeros(3)).loss
    assert none.item() == 0.0
    for bad, message in [
        (torch.ones(2), r"expected shape \[3\]"),
        (torch.tensor([1.0, -1.0, 1.0]), "finite and >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            model(**inputs, answer_ids=answers, loss_weight=bad)


def test_training_with_question_weights_and_a_resliced_init(synth: Path, tmp_path: Path) -> None:
    cache = ["--data", str(synth), "--cache-dir", str(tmp_path / "c")]
    base = tmp_path / "base"
    assert train_main([*COMMON, *cache, "--out", str(base), "--steps", "1"]) == 0
    run = tmp_path / "run"
    flags = ["--init", str(base / "model"), "--question-weight", "how many=2", "--steps", "1"]
    assert (
        train_main([*COMMON, *cache, "--out", str(run), *flags, "--stream-time-groups", "s1=32"])
        == 0
    )
    state = json.loads((run / "checkpoint" / "train_state.json").read_text())
    assert state["args"]["question_weight"] == ["how many=2.0"]
    assert (
        json.loads((run / "model" / "config.json").read_text())["streams"][0]["time_groups"] == 32
    )
    with pytest.raises(SystemExit, match="matches no training question"):
        train_main([*COMMON, *cache, "--out", str(tmp_path / "r2"), "--steps", "1",
                    "--question-weight", "no such question=2"])  # fmt: skip
    with pytest.raises(SystemExit, match="6 does not divide the 32 time steps"):
        train_main([*COMMON, *cache, "--out", str(tmp_path / "r3"), *flags,
                    "--stream-time-groups", "s1=6"])  # fmt: skip
    fresh = tmp_path / "fresh"  # without --init: the preset with s1 cut per frame
    args = [*COMMON, *cache, "--out", str(fresh), "--steps", "1", "--stream-time-groups", "s1=16"]
    assert train_main(args) == 0
    assert (
        json.loads((fresh / "model" / "config.json").read_text())["streams"][0]["time_groups"] == 16
    )
    with pytest.raises(SystemExit, match="no stream 's9'"):
        train_main([*COMMON, *cache, "--out", str(tmp_path / "r4"), "--steps", "1",
                    "--stream-time-groups", "s9=2"])  # fmt: skip


def test_weight_decay_spares_embeddings_norms_and_biases() -> None:
    model = CoTokVQA(CoTokConfig.preset("tiny"))
    decay, keep = (g["params"] for g in param_groups(model, 0.05))
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep}
    assert {"answer_embed.weight", "text_embed.weight", "cotokenizer.video_pos"} <= kept
    assert "cotokenizer.stream_pos.s1.pos_t" in kept
    assert all(p.dim() >= 2 for p in decay)
    assert "cotokenizer.tokenlearners.s1.fc1.weight" in {names[id(p)] for p in decay}
    assert len(decay) + len(keep) == len(list(model.parameters()))


def test_evaluate_prints_accuracy_per_category(synth: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = [*COMMON, "--data", str(synth), "--out", str(run), "--steps", "1"]
    assert train_main([*args, "--cache-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    rc = evaluate_main(
        ["--checkpoint", str(run / "model"), "--data", str(synth), "--format", "msrvtt-qa",
         "--split", "test", "--cache-dir", str(tmp_path / "c")]
    )  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 8  # 2 clips x 4 questions
    assert set(result["per_category"]) == {"0", "1", "2", "3"}
    assert 0.0 <= result["accuracy"] <= 1.0
    bad = "nosuchdevice" if torch.cuda.is_available() else "cuda"
    with pytest.raises(SystemExit):
        evaluate_main(["--checkpoint", str(run / "model"), "--data", str(synth),
                       "--format", "msrvtt-qa", "--device", bad])  # fmt: skip
    assert f"--device {bad}: " in capsys.readouterr().err


def test_evaluate_by_question_and_with_a_stream_blanked(
    synth: Path, tmp_path: Path, capsys
) -> None:
    run, cache = tmp_path / "run", str(tmp_path / "c")
    args = [*COMMON, "--data", str(synth), "--out", str(run), "--steps", "1", "--cache-dir", cache]
    assert train_main(args) == 0
    capsys.readouterr()
    common = ["--checkpoint", str(run / "model"), "--data", str(synth), "--format", "msrvtt-qa",
              "--split", "test", "--cache-dir", cache]  # fmt: skip
    assert evaluate_main([*common, "--by-question", "--blank-stream", "s1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["blank_streams"] == ["s1"]
    assert sum(v["count"] for v in result["per_question"].values()) == result["count"] == 8
    with pytest.raises(SystemExit):
        evaluate_main([*common, "--blank-stream", "s9"])
    assert "--blank-stream s9: the model's streams are" in capsys.readouterr().err
    # The blanked stream is the model's normalisation mean, the others untouched.
    model = CoTokVQA.from_pretrained(run / "model")
    clips = group_by_clip(load_split("msrvtt-qa", synth, "test"))
    specs = [StreamSpec(s.name, s.frames, s.size) for s in model.config.streams]
    full = StreamCache(clips, specs, Path(cache), show_progress=False)
    blanked = BlankedStreams(full, ["s1"], [115, 115, 115]).batch([0, 1])
    assert (blanked["s1"] == 115).all()
    np.testing.assert_array_equal(blanked["s3"], full.batch([0, 1])["s3"])


def test_stream_dropout_blanks_streams_but_never_a_whole_clip(synth: Path, tmp_path: Path) -> None:
    shape = (600, 3, 2, 4, 4)
    streams = {n: torch.full(shape, 7, dtype=torch.uint8) for n in ("s1", "s2", "s3")}
    drop_streams(streams, 0.5, [1, 2, 3], np.random.default_rng(0))
    grey = torch.tensor([1, 2, 3], dtype=torch.uint8)[:, None, None, None]
    blanked = np.zeros((600, 3), dtype=bool)
    for j, x in enumerate(streams.values()):
        for c in range(600):
            blanked[c, j] = torch.equal(x[c], grey.expand(shape[1:]))
            assert blanked[c, j] or bool((x[c] == 7).all())  # grey or untouched, nothing else
    assert not blanked.all(axis=1).any()
    # 1/2, less the 1/8 of clips drawn all-blank that keep one of their three: 0.46.
    assert np.allclose(blanked.mean(axis=0), 0.5 - 1 / 24, atol=0.05)
    single = {"s1": torch.full(shape, 7, dtype=torch.uint8)}
    assert (drop_streams(single, 0.9, [1, 2, 3], np.random.default_rng(0))["s1"] == 7).all()
    with pytest.raises(SystemExit):
        parse_args(["--data", str(synth), "--format", "msrvtt-qa", "--out", str(tmp_path),
                    "--stream-dropout", "1"])  # fmt: skip


def test_schedule_and_batches() -> None:
    ns = type("A", (), {"lr": 1.0, "warmup": 10, "steps": 110})()
    assert lr_at(0, ns) == pytest.approx(0.1)
    assert lr_at(9, ns) == pytest.approx(1.0)
    assert lr_at(60, ns) == pytest.approx(0.5)
    assert lr_at(110, ns) == pytest.approx(0.0)
    timed = type("A", (), {"lr": 1.0, "warmup": 10, "steps": 10**6})()
    assert lr_at(20, timed, time_progress=0.5) == pytest.approx(0.5)  # half the budget spent
    assert lr_at(20, timed, time_progress=1.0) == pytest.approx(0.0)
    assert lr_at(5, timed, time_progress=None) == pytest.approx(0.6)  # warm-up counts steps
    b = ClipBatches(5, 4, seed=1, rank=0, world=1)
    seen = b(0) + b(1)[:1]  # the first 5 clips drawn are one epoch: each clip once
    assert sorted(seen) == [0, 1, 2, 3, 4]
    halves = [ClipBatches(5, 4, 1, r, 2)(3) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(b(3))
    assert training_answer(["A cat", "dog", "cat"]) == "cat"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cotok_edge.train", *COMMON, "--data", str(synth), "--out", str(run),
        "--steps", "2", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "model" / "model.safetensors").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_caption_pretraining_then_qa_fine_tuning(synth: Path, tmp_path: Path, capsys) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache"), "--data", str(synth)]
    qa = tmp_path / "qa"
    assert train_main([*COMMON, *cache, "--out", str(qa), "--steps", "1"]) == 0
    caps = ["--format", "captions", "--preset", "tiny", "--clips", "2", *cache, "--steps", "2"]
    # Captions are sentences: the default 8-token targets cannot hold them, and the
    # error says what to pass.
    with pytest.raises(SystemExit, match="pass --max-answer-tokens"):
        train_main([*caps, "--out", str(tmp_path / "too-short")])
    pre = tmp_path / "pre"
    shared = ["--tokenizer", str(qa / "model" / "tokenizer.json")]
    assert train_main([*caps, *shared, "--max-answer-tokens", "64", "--out", str(pre)]) == 0
    assert "no validation" in capsys.readouterr().err
    assert (
        json.loads((pre / "model" / "config.json").read_text())["text"]["max_answer_tokens"] == 64
    )
    # Pre-training's tokenizer is the QA run's, so fine-tuning keeps the same vocabulary.
    same = (pre / "model" / "tokenizer.json").read_bytes()
    assert same == (qa / "model" / "tokenizer.json").read_bytes()
    tuned = tmp_path / "tuned"
    args = [*COMMON, *cache, "--init", str(pre / "model"), "--max-answer-tokens", "8"]
    assert train_main([*args, "--fraction", "0.5", "--out", str(tuned), "--steps", "1"]) == 0
    start, end = load_file(str(pre / "model" / "model.safetensors")), _weights(tuned)
    assert start.keys() == end.keys()
    assert not torch.equal(start["cotokenizer.video_pos"], end["cotokenizer.video_pos"])
    assert (
        json.loads((tuned / "model" / "config.json").read_text())["text"]["max_answer_tokens"] == 8
    )


def test_a_frozen_backbone_is_left_exactly_as_it_was(synth: Path, tmp_path: Path) -> None:
    cache = ["--data", str(synth), "--cache-dir", str(tmp_path / "c")]
    base = tmp_path / "base"
    assert train_main([*COMMON, *cache, "--out", str(base), "--steps", "1"]) == 0
    run = tmp_path / "run"
    flags = ["--init", str(base / "model"), "--steps", "2", "--lr", "1e-2", "--warmup", "1"]
    assert train_main([*COMMON, *cache, "--out", str(run), *flags, "--freeze-backbone", "s2"]) == 0
    before = load_file(str(base / "model" / "model.safetensors"))
    after = load_file(str(run / "model" / "model.safetensors"))
    s2 = [k for k in after if k.startswith("backbones.s2.")]
    # Weights and BatchNorm running statistics alike: the backbone ran in eval mode.
    assert s2 and any("running_mean" in k for k in s2)
    assert all(torch.equal(before[k], after[k]) for k in s2)
    for stream in ("backbones.s1.", "cotokenizer."):
        moved = [k for k in after if k.startswith(stream) and not torch.equal(before[k], after[k])]
        assert moved, f"{stream} did not train"
    with pytest.raises(SystemExit, match="no stream"):
        train_main([*COMMON, *cache, "--out", str(tmp_path / "bad"), *flags,
                    "--freeze-backbone", "s9"])  # fmt: skip


def test_freezing_every_backbone_records_no_graph_through_them() -> None:
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny"))
    model.freeze_backbones(model.stream_names)
    model.train()
    assert model.training and not any(b.training for b in model.backbones.values())
    inputs = model.example_inputs(2)
    video = model.encode_video({s: inputs[s] for s in model.stream_names})
    # Only the projection after the backbone needs a gradient: the features come in as leaves.
    feats = {n: model.backbones[n](model.normalize(inputs[n])) for n in model.stream_names}
    assert all(not f.requires_grad for f in feats.values())
    assert all(v.requires_grad for v in video.values())
