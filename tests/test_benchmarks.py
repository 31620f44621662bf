"""The benchmark suite's gate (``benchmarks.check``), report renderer and plots.

On results dicts built here: the suite itself (``python -m benchmarks --quick``) is run by
CI separately, not by these tests.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import check, plots, report
from cotok_edge.model import CoTokConfig


def _stages(pre: float, inf: float, post: float) -> dict[str, dict[str, float]]:
    def p(v: float) -> dict[str, float]:
        return {"p50": v, "p90": 1.1 * v, "p99": 1.2 * v}

    return {"decode": p(0.0), "preprocess": p(pre), "inference": p(inf),
            "postprocess": p(post), "total": p(pre + inf + post)}  # fmt: skip


def _lat_row(preset: str, backend: str, precision: str, weights: str, **extra: Any) -> dict:
    single = _stages(5.0, 95.0, 0.1)
    row = {
        "preset": preset, "backend": backend, "precision": precision, "weights": weights,
        "runs": 50, "warmup": 3, "single": single, "batch4": _stages(5.0, 120.0, 0.1),
        "ratio_4_to_1": 1.25, "command": "python -m benchmarks.latency ...",
        "clips_per_s": 10.0, "pre_post_share": 5.1 / 100.1,
    }  # fmt: skip
    row.update(extra)
    return row


def good_results(mode: str = "full") -> dict[str, Any]:
    """A results dict of ``python -m benchmarks`` that meets every bar."""
    groups = {"backbones": 1.0, "text encoder": 0.1, "co-tokenization": 0.5, "decoder": 0.1}
    presets = {
        name: {"total_gmacs": g, "total_gflops": 2 * g, "groups_gmacs": groups,
               "components_gmacs": {"backbone:s1": g / 2, "decoder (8 tokens)": g / 2}}
        for name, g in (("paper", 58.8), ("edge", 14.3), ("tiny", 2.06),
                        ("baseline-3dresnet", 301.0), ("baseline-x3d", 61.0))
    }  # fmt: skip
    rows = {
        "torch fp32": {"accuracy": 0.40, "agreement": 1.0, "max_logit_error": 0.0,
                       "mean_logit_error": 0.0},
        "onnxruntime fp32": {"accuracy": 0.40, "agreement": 1.0, "max_logit_error": 6e-6,
                             "mean_logit_error": 1e-6},
        "onnxruntime int8 (PTQ)": {"accuracy": 0.38, "agreement": 0.95,
                                   "max_logit_error": 0.03, "mean_logit_error": 0.01},
        "onnxruntime int8 (QAT)": {"accuracy": 0.395, "agreement": 0.98,
                                   "max_logit_error": 0.02, "mean_logit_error": 0.005},
    }  # fmt: skip
    bars = {
        "fp32 answers identical": {"value": 1.0, "bar": ">= 1.0", "passed": True},
        "fp32 max logit error": {"value": 6e-6, "bar": "<= 1e-4", "passed": True},
        "onnxruntime int8 (QAT) accuracy drop (points)": {"value": 0.5, "bar": "<= 1.0",
                                                          "passed": True},
        "onnxruntime int8 (QAT) answer agreement": {"value": 0.98, "bar": ">= 0.97",
                                                    "passed": True},
    }  # fmt: skip
    quick = mode == "quick"
    return {
        "mode": mode,
        "command": "python -m benchmarks" + (" --quick" if quick else ""),
        "started": "2026-01-01T00:00:00+00:00",
        "seconds": 100.0,
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None, "memory_gib": 8.0,
                    "load_average": [1.0, 1.0, 1.0], "system": "Linux"},
        "versions": {"torch": "2.13.0", "onnxruntime": "1.32.0", "nvidia-modelopt": "0.40",
                     "triton": None},
        "checkpoint": "ckpt",
        "sizes": {"calib_clips": 16 if quick else 512, "test_clips": 16 if quick else 100,
                  "qat_steps": 2 if quick else 60, "qat_clips": 4, "runs": 50, "warmup": 3},
        "flops": {"command": "python -m benchmarks.flops", "convention": "GMACs",
                  "presets": presets, "targets_gmacs": {"paper": [55, 67], "edge": [0, 20]},
                  "paper_figures": {"paper": "67", "baseline-3dresnet": "360",
                                    "baseline-x3d": "> 134"}},
        "trained_models": [{"name": "tiny", "preset": "tiny", "gmacs": 2.06, "accuracy": 0.33,
                            "per_category": {"0": 0.29, "3": 0.53}, "steps": 1500, "seed": 0,
                            "command": "python -m cotok_edge.train ..."}],
        "parity": {
            "command": "python -m cotok_edge.build --target cpu ...", "exit_code": 0,
            "seconds": 60.0, "rows": rows, "bars": bars,
            "slice": {"clips": 16 if quick else 100, "questions": 64 if quick else 400,
                      "split": "test"},
            "quantization": {"calibration_clips": 16 if quick else 512,
                             "qat_steps": 2 if quick else 60},
            "engine_status": {"built": False, "reason": "no tensorrt here"},
            "sizes": {"video_encoder.onnx": 3_000_000, "question_decoder.onnx": 1_000_000,
                      "checkpoint/model.safetensors": 11_000_000},
        },
        "fp32_bundle": {"sizes": {"video_encoder.onnx": 11_000_000,
                                  "question_decoder.onnx": 4_000_000}},
        "latency": {"frames": "in memory", "rows": [
            _lat_row("tiny", "onnxruntime", "int8 (QAT)", "checkpoint",
                     soak={"answers": 100, "seconds": 10.0, "rss_after_warmup_mib": 200.0,
                           "rss_end_mib": 201.0, "rss_growth_mib": 1.0},
                     threads={"threads": 4, "answers": 40, "seconds": 5.0,
                              "answers_per_s": 8.0, "identical": True, "mismatches": []}),
            _lat_row("tiny", "onnxruntime", "fp32", "checkpoint"),
            _lat_row("tiny", "torch", "fp32", "checkpoint"),
            _lat_row("edge", "onnxruntime", "fp32", "random"),
        ]},
        "gpu": {"origin": None, "tables": {}},
    }  # fmt: skip


def statuses(results: dict[str, Any]) -> dict[str, str]:
    return {b.name: b.status for b in check.evaluate(results)}


def run_check(tmp_path: Path, results: dict[str, Any], capsys, *extra: str) -> tuple[int, str]:
    f = tmp_path / "results.json"
    f.write_text(json.dumps(results))
    code = check.main([str(f), *extra])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# The gate ---------------------------------------------------------------------------------
def test_good_results_pass_every_bar(tmp_path, capsys):
    results = good_results()
    bars = check.evaluate(results)
    st = {b.name: b.status for b in bars}

    # The demonstration preset's share and 4:1 ratio are shown but not gated.
    def tiny_ratio(n: str) -> bool:
        return ("share" in n or "4 questions" in n) and "tiny" in n

    assert {s for n, s in st.items() if tiny_ratio(n)} == {check.SKIPPED}
    assert {s for n, s in st.items() if not tiny_ratio(n)} == {check.PASSED}
    assert st["latency: pre/post-processing share of total, edge onnxruntime fp32"] == "passed"
    assert st["latency: 4 questions / 1 question (p50 total), edge onnxruntime fp32"] == "passed"
    code, out = run_check(tmp_path, results, capsys)
    assert code == 0, out
    assert "MISSED" not in out


def _set(path: list[Any], value: Any):
    def mutate(r: dict[str, Any]) -> None:
        node = r
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return mutate


LAT = ["latency", "rows"]


@pytest.mark.parametrize(
    "mutate, missed",
    [
        (_set(["flops", "presets", "paper", "total_gmacs"], 70.0), "FLOP budget: paper total"),
        (_set(["flops", "presets", "paper", "total_gmacs"], 50.0), "FLOP budget: paper total"),
        (_set(["flops", "presets", "edge", "total_gmacs"], 20.5), "FLOP budget: edge total"),
        (_set(["parity", "rows", "onnxruntime fp32", "agreement"], 63 / 64),
         "ONNX Runtime FP32 answers identical"),
        (_set(["parity", "rows", "onnxruntime fp32", "max_logit_error"], 2e-4),
         "ONNX Runtime FP32 max logit error"),
        (_set(["parity", "rows", "onnxruntime int8 (QAT)", "accuracy"], 0.385),
         "onnxruntime int8 (QAT) accuracy drop"),
        (_set(["parity", "rows", "onnxruntime int8 (QAT)", "agreement"], 0.96),
         "onnxruntime int8 (QAT) answer agreement"),
        (_set([*LAT, 3, "pre_post_share"], 0.11), "pre/post-processing share of total, edge"),
        (_set([*LAT, 3, "ratio_4_to_1"], 1.6), "4 questions / 1 question (p50 total), edge "
         "onnxruntime fp32"),
        (_set([*LAT, 0, "soak", "rss_growth_mib"], 12.0), "RSS growth over 100 answers"),
        (_set([*LAT, 0, "threads", "identical"], False), "4 threads give the serial answers"),
    ],
)  # fmt: skip
def test_each_missed_bar_is_named_and_fails(mutate, missed, tmp_path, capsys):
    results = good_results()
    mutate(results)
    bad = [b for b in check.evaluate(results) if b.status == check.MISSED]
    assert len(bad) == 1 and missed in bad[0].name, [b.name for b in bad]
    code, out = run_check(tmp_path, results, capsys)
    assert code == 1
    assert f"MISSED: {bad[0].name}" in out


def test_several_missed_bars_are_all_named(tmp_path, capsys):
    results = good_results()
    results["flops"]["presets"]["edge"]["total_gmacs"] = 25.0
    results["parity"]["rows"]["onnxruntime fp32"]["max_logit_error"] = 1e-3
    code, out = run_check(tmp_path, results, capsys)
    assert code == 1
    assert out.count("MISSED: ") == 2


def test_quick_mode_skips_the_int8_bars_it_cannot_resolve_and_never_passes_them():
    results = good_results("quick")
    results["parity"]["rows"]["onnxruntime int8 (QAT)"]["agreement"] = 0.5  # would miss
    bars = {b.name: b for b in check.evaluate(results)}
    int8 = [b for n, b in bars.items() if n.startswith("parity") and "int8" in n]
    assert len(int8) == 2
    for b in int8:
        assert b.status == check.SKIPPED
        assert "64 test questions" in b.note and "16 clips" in b.note
    # FP32 parity stays gated in quick mode.
    results["parity"]["rows"]["onnxruntime fp32"]["agreement"] = 0.9
    assert statuses(results)["parity: ONNX Runtime FP32 answers identical to torch FP32"] == (
        check.MISSED
    )


def test_missing_measurements_are_not_measured_not_passed(tmp_path, capsys):
    results = good_results("quick")
    results["latency"]["rows"] = [r for r in results["latency"]["rows"] if r["preset"] == "tiny"]
    del results["latency"]["rows"][0]["soak"]
    del results["parity"]["rows"]["onnxruntime fp32"]
    st = statuses(results)
    assert st["latency: pre/post-processing share of total (edge, paper)"] == check.NOT_MEASURED
    assert st["latency: 4 questions / 1 question (p50 total) (edge, paper)"] == check.NOT_MEASURED
    assert st["latency: RSS growth over the soak"] == check.NOT_MEASURED
    assert st["parity: ONNX Runtime FP32 max logit error"] == check.NOT_MEASURED
    assert check.PASSED not in {s for n, s in st.items() if "FP32" in n or "soak" in n}
    code, out = run_check(tmp_path, results, capsys)
    assert code == 0 and "not measured" in out  # quick: reported, not failed
    code, _ = run_check(tmp_path, results, capsys, "--strict")
    assert code == 1
    results["mode"] = "full"  # a full run must measure everything
    code, _ = run_check(tmp_path, results, capsys)
    assert code == 1


def test_a_failed_latency_run_is_not_measured():
    results = good_results("quick")
    results["latency"]["rows"] = [{"preset": "tiny", "backend": "onnxruntime",
                                   "precision": "fp32", "weights": "checkpoint",
                                   "command": "x", "error": "boom"}]  # fmt: skip
    st = statuses(results)
    assert st["latency: 4 questions / 1 question (p50 total) (edge, paper)"] == check.NOT_MEASURED
    assert st["latency: threads give the serial answers"] == check.NOT_MEASURED


def test_unreadable_results_file(tmp_path, capsys):
    assert check.main([str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


# The report -------------------------------------------------------------------------------
def test_report_has_every_section_and_the_records():
    results = good_results("quick")
    results["check"] = [b.to_dict() for b in check.evaluate(results)]
    results["plots"] = {"budget": "budget.png", "accuracy": "accuracy_vs_gmacs.png",
                        "latency": "latency.png"}  # fmt: skip
    records = "## Training speed (issue 2)\n\nverbatim record\n"
    text = report.render(results, records)
    for heading in ("# Measured results", "## FLOP budget",
                    "### Accuracy against GMACs (trained models)",
                    "## Parity: backend x precision", "## Latency: backend x precision x preset",
                    "## Formats", "## GPU: fused kernels and the model on CUDA",
                    "## Bars (`python -m benchmarks.check`)", report.RECORDS_HEADING):  # fmt: skip
        assert heading in text, heading
    # Generated tables come first, the records last and verbatim.
    assert text.index("## Formats") < text.index(report.RECORDS_HEADING)
    assert text.rstrip().endswith("verbatim record")
    assert "Test CPU" in text and "onnxruntime 1.32.0" in text and "triton not installed" in text
    assert "**Quick mode**" in text
    assert "| paper | 1.00 | 0.100 | 0.50 | 0.100 | 58.80 | 117.60 | 1.00 | 55-67: met |" in text
    assert "| onnxruntime int8 (QAT) | 39.5% | 98.0% | 2.00e-02 | 5.00e-03 |" in text
    assert "tensorrt fp16 (not measured)" in text and "no tensorrt here" in text
    assert "python -m cotok_edge.build --target cpu" in text  # every table names its command
    assert "python -m benchmarks.latency" in text
    assert "![accuracy against GMACs](accuracy_vs_gmacs.png)" in text
    assert "skipped" in text  # the quick-mode INT8 bars


def test_format_table_statuses():
    results = good_results()
    rows = {r["format"]: r for r in report.format_rows(results)}
    assert rows["ONNX FP32 (ONNX Runtime)"]["status"] == "passed"
    assert rows["ONNX INT8 Q/DQ, QAT (ONNX Runtime)"]["status"] == "passed"
    assert rows["ONNX INT8 Q/DQ, QAT (ONNX Runtime)"]["size_mb"] == pytest.approx(4.0)
    assert rows["ONNX FP32 (ONNX Runtime)"]["latency_ms"] == pytest.approx(100.1)
    assert rows["TensorRT INT8 engine"]["status"] == "not run here"
    # PTQ (2 points down, 95% agreement) is held to the INT8 bars too.
    assert rows["ONNX INT8 Q/DQ, PTQ (ONNX Runtime)"]["status"] == "failed validation"
    bad = copy.deepcopy(results)
    bad["parity"]["bars"]["onnxruntime int8 (QAT) answer agreement"]["passed"] = False
    rows = {r["format"]: r for r in report.format_rows(bad)}
    assert rows["ONNX INT8 Q/DQ, QAT (ONNX Runtime)"]["status"] == "failed validation"
    del bad["parity"]["rows"]["onnxruntime int8 (QAT)"]
    rows = {r["format"]: r for r in report.format_rows(bad)}
    assert rows["ONNX INT8 Q/DQ, QAT (ONNX Runtime)"]["status"] == "failed"
    assert "❌ failed" in report.formats_section(bad)


def test_report_of_a_failed_build_and_recorded_gpu_tables():
    results = good_results()
    results["parity"] = {"command": "python -m cotok_edge.build ...", "exit_code": 2,
                         "error": "checkpoint does not load"}  # fmt: skip
    results["gpu"] = {"origin": "recorded by gpu.sh", "tables": {"kernels.md": "| k | 1 |"}}
    text = report.render(results)
    assert "Not measured: the build failed" in text and "checkpoint does not load" in text
    assert "recorded by gpu.sh" in text and "| k | 1 |" in text
    assert report.RECORDS_HEADING not in text


# The plots --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_models", [0, 1, 4])
def test_plots_handle_any_number_of_trained_models(n_models, tmp_path):
    pytest.importorskip("matplotlib")
    results = good_results()
    results["trained_models"] = [
        {"name": f"m{i}", "gmacs": 2.0 * (i + 1), "accuracy": 0.3 + 0.1 * i}
        for i in range(n_models)
    ]
    out = plots.write_all(results, tmp_path)
    assert ("accuracy" in out) == (n_models > 0)
    for name in out.values():
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert {"budget", "latency"} <= set(out)


def test_trained_models_file_is_well_formed():
    data = json.loads((Path(check.__file__).parent / "trained_models.json").read_text())
    assert isinstance(data, list) and data
    for m in data:
        assert {"name", "gmacs", "accuracy", "per_category", "steps", "seed", "command"} <= set(m)
        assert 0.0 <= m["accuracy"] <= 1.0


def _fake_run(folder: Path, evals: dict[int, dict[str, float]], **args: Any) -> Path:
    """A training run folder as cotok_edge.train writes it: metrics.jsonl + train_state.json."""
    (folder / "checkpoint").mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for step in range(1, max(evals) + 1):
            record: dict[str, Any] = {"step": step, "loss": 1.0}
            if step in evals:
                cats = evals[step]
                record["eval"] = {
                    "accuracy": sum(cats.values()) / len(cats),
                    "count": 40 * len(cats),
                    "per_category": {c: {"accuracy": a, "count": 40} for c, a in cats.items()},
                }
            f.write(json.dumps(record) + "\n")
    state = {"step": max(evals), "seed": args.get("seed", 0), "args": {"seed": 0, **args}}
    (folder / "checkpoint" / "train_state.json").write_text(json.dumps(state))
    return folder


def test_ablation_table_reads_each_runs_evaluation(tmp_path, capsys):
    from benchmarks import ablations

    a = _fake_run(tmp_path / "a", {2: {"0": 0.25, "1": 0.5}, 4: {"0": 0.5, "1": 1.0}})
    b = _fake_run(tmp_path / "b", {2: {"0": 0.75, "1": 0.25}}, streams="s1", cotok_steps=1)
    png = tmp_path / "abl.png"
    assert ablations.main(["--run", f"three={a}", "--run", f"s1={b}", "--step", "2",
                           "--png", str(png)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| three | 2 | 80 | 37.5% | 25.0% | 50.0% | 0 | - |" in out
    assert "| s1 | 2 | 80 | 50.0% | 75.0% | 25.0% | 0 | --streams s1, --cotok-steps 1 |" in out
    assert png.stat().st_size > 0
    # Default: each run's last evaluation.
    assert ablations.read_eval("three", a).per_category == {"0": 0.5, "1": 1.0}
    # A step a run did not evaluate is an error naming the run and the steps it has.
    assert ablations.main(["--run", f"three={a}", "--run", f"s1={b}", "--step", "4"]) == 2
    assert "run 's1': no evaluation at step 4" in capsys.readouterr().err
    assert ablations.main(["--run", f"x={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ablation_runs_under_one_label_are_seeds_of_one_row(tmp_path, capsys):
    from benchmarks import ablations

    a0 = _fake_run(tmp_path / "a0", {2: {"0": 0.25, "1": 0.5}})
    a1 = _fake_run(tmp_path / "a1", {2: {"0": 0.75, "1": 1.0}}, seed=1)
    b = _fake_run(tmp_path / "b", {2: {"0": 0.5, "1": 0.5}}, streams="s2", stream_dropout=0.3)
    png = tmp_path / "seeds.png"
    argv = ["--run", f"three={a0}", "--run", f"s2={b}", "--run", f"three={a1}", "--png", str(png)]
    assert ablations.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    three = "| three | 2 | 80 | 62.5% (37.5, 87.5) | 50.0% (25.0, 75.0) | 75.0% (50.0, 100.0) |"
    assert f"{three} 0, 1 | - |" in lines
    s2 = "| s2 | 2 | 80 | 50.0% | 50.0% | 50.0% |"
    assert f"{s2} 0 | --streams s2, --stream-dropout 0.3 |" in lines
    assert png.stat().st_size > 0


@pytest.mark.parametrize("bf16", ["off", "on"])
def test_train_step_benchmark_times_steps_in_either_precision(bf16, capsys):
    from benchmarks import train_step

    argv = ["--preset", "tiny", "--clips", "1", "--questions", "2", "--steps", "1"]
    assert train_step.main([*argv, "--bf16", bf16]) == 0
    out = capsys.readouterr().out
    assert (", bf16 autocast" in out) == (bf16 == "on")
    assert "| tiny | 1 x 2 | 1 |" in out


def test_train_step_benchmark_times_a_given_config(tmp_path, capsys):
    from benchmarks import train_step

    cfg = CoTokConfig.preset("tiny")
    cfg.streams = [s for s in cfg.streams if s.name == "s3"]
    cfg.streams[0].stem = "pool"
    cfg.to_json(tmp_path / "config.json")
    argv = ["--config", str(tmp_path / "config.json"), "--clips", "1", "--questions", "2"]
    assert train_step.main([*argv, "--steps", "1"]) == 0
    assert f"| tiny ({tmp_path / 'config.json'}) | 1 x 2 | 1 |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit):
        train_step.main(["--config", str(tmp_path / "bad.json")])
    assert f"--config {tmp_path / 'bad.json'}:" in capsys.readouterr().err


def test_stream_ceiling_bounds_what_fewer_frames_can_answer():
    from benchmarks import stream_ceiling

    assert stream_ceiling.seen_frames(32) == list(range(32))
    assert stream_ceiling.seen_frames(16) == list(range(1, 32, 2))
    assert stream_ceiling.seen_frames(8) == list(range(2, 32, 4))
    lamps = [{"color": "red", "on_frames": [3]}, {"color": "blue", "on_frames": [6]}]
    assert stream_ceiling.lamp_observation(lamps, [2, 3, 6]) == ((), ("red",), ("blue",))
    assert stream_ceiling.fine_time_answer(lamps, "order") == "red"
    r = stream_ceiling.ceilings(3000, seed=1, progress=False)
    # Every frame shows every blink and flash: the answer is a function of the look.
    assert r["s1"]["count"] == r["s1"]["order"] == 1.0
    assert r["s3"]["fine time"] < r["s2"]["fine time"] < r["s1"]["fine time"]
    assert r["s3"]["held-out fine time"] <= r["s3"]["fine time"] + 0.05


@pytest.mark.parametrize("script", ["gpu.sh", "gpu_session.sh"])
def test_gpu_scripts_parse_and_refuse_to_run_without_their_arguments(script: str) -> None:
    path = Path(__file__).parent.parent / "benchmarks" / script
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if script == "gpu_session.sh":  # OUT is required: nothing starts without it
        proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "usage: gpu_session.sh OUT" in proc.stderr
