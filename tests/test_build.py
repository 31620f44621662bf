"""``python -m cotok_edge.build``: argument checks, an end-to-end INT8 build, atomicity."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")
pytest.importorskip("modelopt", reason="nvidia-modelopt is not installed (pip install '.[export]')")

from cotok_edge import build as build_cli  # noqa: E402
from cotok_edge.bundle import BundleError, read_manifest, verify_files  # noqa: E402
from cotok_edge.data.text import load_tokenizer  # noqa: E402
from cotok_edge.model import CoTokConfig, CoTokVQA  # noqa: E402
from cotok_edge.runtime.backends.tensorrt.build import graph_precision  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHIPPED_TOKENIZER = Path(build_cli.__file__).parent.parent / "assets/default/tokenizer.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny model with the shipped tokenizer (builds need no training)."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = CoTokConfig.preset("tiny")
    cfg.text.vocab_size = load_tokenizer(SHIPPED_TOKENIZER).get_vocab_size()
    torch.manual_seed(0)
    CoTokVQA(cfg).save_pretrained(out)
    shutil.copyfile(SHIPPED_TOKENIZER, out / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def small(ckpt: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint", str(ckpt), "--out", str(out), "--cache-dir", str(cache),
        "--calib-clips", "8", "--test-clips", "4", "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "jetson-oring"], "did you mean 'jetson-orin'"),
        (["--target", "jetson-orin-nano", "--dla"], "Jetson Orin Nano has no DLA"),
        (["--target", "jetson-orin", "--precision", "fp8"], "no FP8"),
        (["--target", "cpu", "--plugin"], "plugin"),
        (["--target", "cpu", "--checkpoint", "/no/such/ckpt"], "--checkpoint /no/such/ckpt"),
        (["--target", "cpu", "--calib-data", "/no/such/data"], "--calib-data /no/such/data"),
        (["--target", "cpu", "--qat-steps", "-1"], "--qat-steps"),
        (["--target", "cpu", "--calib-clips", "0"], "--calib-clips"),
    ],
)
def test_bad_arguments_are_refused_up_front(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        build_cli.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    with pytest.raises(SystemExit):
        build_cli.parse_args(["--target", "cpu", "--out", str(out)])
    assert "pass --force" in capsys.readouterr().err
    args = build_cli.parse_args(["--target", "cpu", "--out", str(out), "--force"])
    assert args.precision == "int8" and args.plugin is False


def test_a_checkpoint_that_does_not_load_is_a_clear_error(checkpoint, cache, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "bundle"
    code = build_cli.main(["--target", "cpu", *small(bad, out, cache)])
    assert code == 2
    assert "does not load" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def int8_bundle(checkpoint, cache, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("b") / "cpu-int8"
    code = build_cli.main(["--target", "cpu", *small(checkpoint, out, cache, "--qat-steps", "2")])
    return out, code


def test_int8_build_writes_a_verified_bundle(int8_bundle):
    out, code = int8_bundle
    assert code in (0, 1)  # 1: a random model may miss the INT8 agreement bar; reported
    manifest = read_manifest(out)
    verify_files(out, manifest)
    assert manifest.precision == "int8" and manifest.target == "cpu"
    for name in ("video_encoder.onnx", "question_decoder.onnx", "question_decoder_explain.onnx",
                 "tokenizer.json", "checkpoint/model.safetensors", "report.md"):  # fmt: skip
        assert name in manifest.files, name
    # The deployed graphs carry Q/DQ; the explanation graph stays FP32.
    assert graph_precision(out / "video_encoder.onnx") == "int8"
    assert graph_precision(out / "question_decoder.onnx") == "int8"
    assert graph_precision(out / "question_decoder_explain.onnx") == "fp32"
    rows = manifest.parity["rows"]
    assert set(rows) == {
        "torch fp32", "onnxruntime fp32", "onnxruntime int8 (PTQ)", "onnxruntime int8 (QAT)",
    }  # fmt: skip
    assert rows["onnxruntime fp32"]["agreement"] == 1.0
    assert rows["onnxruntime fp32"]["max_logit_error"] <= 1e-4
    assert manifest.parity["slice"]["questions"] == 16
    assert manifest.quantization["quantizers"]["weight"] > 0
    bars = manifest.parity["bars"]
    assert code == (0 if all(b["passed"] for b in bars.values()) else 1)
    report = (out / "report.md").read_text()
    assert "onnxruntime int8 (QAT)" in report and "GMACs" in report
    assert "agreement where FP32 is sure" in report
    assert rows["torch fp32"]["sure_agreement"] in (1.0, None)
    assert 0.0 <= rows["onnxruntime int8 (QAT)"]["sure_share"] <= 1.0
    assert not (out / "finish_on_device.sh").exists()  # the CPU target has nothing to finish


def test_a_tampered_file_fails_verification(int8_bundle, tmp_path):
    out, _ = int8_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "question_decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="question_decoder.onnx does not match its sha256"):
        verify_files(copy, read_manifest(copy))


def test_the_saved_quantized_model_restores_with_identical_outputs(int8_bundle):
    from cotok_edge.export.qat import load_quantized

    out, _ = int8_bundle
    restored = load_quantized(out / "quantized" / "model.modelopt.pth")
    from cotok_edge.export.ort import OrtChain

    chain = OrtChain(out / "video_encoder.onnx", out / "question_decoder.onnx", threads=1)
    inputs = restored.example_inputs(
        batch_size=1, question_len=restored.config.text.max_question_tokens
    )
    got = chain({s: inputs[s].numpy() for s in restored.stream_names},
                inputs["question_ids"], inputs["question_mask"])  # fmt: skip
    from cotok_edge.export.onnx import QuestionDecoderGraph, VideoEncoderGraph

    with torch.no_grad():
        video = VideoEncoderGraph(restored)(*(inputs[s] for s in restored.stream_names))
        ids = QuestionDecoderGraph(restored)(
            *video, inputs["question_ids"], inputs["question_mask"]
        )[0]
    # The restored fake-quant model and its exported Q/DQ graph agree on the answer.
    np.testing.assert_array_equal(got["answer_ids"], ids.numpy())


def test_jetson_fp32_build_prepares_the_device_step(checkpoint, cache, tmp_path):
    out = tmp_path / "orin"
    code = build_cli.main(
        ["--target", "jetson-orin", "--precision", "fp32", *small(checkpoint, out, cache)]
    )
    assert code == 0
    manifest = read_manifest(out)
    assert manifest.engine is None
    assert "tensorrt" in manifest.engine_status["reason"]
    assert "question_decoder_plugin.onnx" in manifest.files
    assert "plugins/CMakeLists.txt" in manifest.files
    script = (out / "finish_on_device.sh").read_text()
    assert 'cmake --build "$build"' in script
    assert "python3 -m cotok_edge.build --finish . || status=$?" in script
    assert "polygraphy run video_encoder.onnx --trt --onnxrt" in script
    assert "polygraphy run question_decoder.onnx --trt --onnxrt" in script
    assert "# /usr/src/tensorrt/bin/trtexec --onnx=video_encoder.onnx" in script
    assert "--onnx=question_decoder_plugin.onnx" in script
    assert "--dynamicPlugins=plugins/libcotok_tokenlearner_plugin.so" in script
    assert "--noTF32" in script and "--int8" not in script
    assert manifest.quantization is None
    report = (out / "report.md").read_text()
    assert "No engine built on this host: the tensorrt Python package is not installed" in report


def test_a_failed_build_leaves_no_bundle_and_keeps_the_old_one(
    checkpoint, cache, tmp_path, monkeypatch
):
    import cotok_edge.export.report as report

    def broken(manifest):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(report, "render_report", broken)
    out = tmp_path / "b"
    argv = ["--target", "cpu", "--precision", "fp32", *small(checkpoint, out, cache)]
    with pytest.raises(RuntimeError, match="simulated"):
        build_cli.main(argv)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    out.mkdir()
    (out / "keep.txt").write_text("old bundle")
    with pytest.raises(RuntimeError, match="simulated"):
        build_cli.main([*argv, "--force"])
    assert (out / "keep.txt").read_text() == "old bundle"


@pytest.mark.parametrize(
    "backend, compared_with", [("onnxruntime", "deployed"), ("torch", "torch_fp32")]
)
def test_verify_answers_the_parity_slice_again(int8_bundle, backend, compared_with, capsys):
    out, _ = int8_bundle
    code = build_cli.main(["--verify", str(out), "--backend", backend, "--quiet"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["backend"] == backend and result["compared_with"] == compared_with
    assert result["questions"] == 16
    assert result["agreement"] == 1.0
    assert code == 0


def test_finish_refuses_without_tensorrt(int8_bundle, capsys):
    out, _ = int8_bundle
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: --finish would build")
    assert build_cli.main(["--finish", str(out), "--quiet"]) == 2
    assert "cannot build engines here" in capsys.readouterr().err


def test_device_script_is_valid_bash(checkpoint, cache, tmp_path):
    out = tmp_path / "nx"
    argv = ["--target", "jetson-orin-nx", "--precision", "fp32", *small(checkpoint, out, cache)]
    assert build_cli.main(argv) == 0
    subprocess.run(["bash", "-n", str(out / "finish_on_device.sh")], check=True)


def test_verify_refuses_a_bundle_without_build_time_answers(int8_bundle, tmp_path, capsys):
    out, _ = int8_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "parity" / "answers.json").unlink()
    assert build_cli.main(["--verify", str(copy), "--quiet"]) == 2
    assert "no parity slice and build-time answers" in capsys.readouterr().err


def test_finish_and_verify_run_without_torch(int8_bundle):
    """The on-device path imports no torch, ModelOpt, onnx or ONNX exporter: with them
    blocked, --finish gets as far as TensorRT (absent here: exit 2, saying so) and
    --verify answers the parity slice through the runtime."""
    out, _ = int8_bundle
    script = textwrap.dedent(
        f"""
        import json, sys
        BLOCKED = ("torch", "modelopt", "onnx")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED or name.startswith("cotok_edge.export.onnx"):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None
        sys.meta_path.insert(0, Block())
        from cotok_edge.build import main
        from cotok_edge.build.finish import device_script, finish, verify
        from cotok_edge.runtime.backends.tensorrt.build import build_bundle_engines
        codes = [main(["--finish", {str(out)!r}, "--quiet"]),
                 main(["--verify", {str(out)!r}, "--backend", "onnxruntime", "--quiet"])]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    finish_code, verify_code = result["codes"]
    if importlib.util.find_spec("tensorrt") is None:
        assert finish_code == 2 and "cannot build engines here" in r.stderr
    assert verify_code == 0


def test_polygraphy_compares_tensorrt_with_onnxruntime_on_the_plans_shapes():
    from cotok_edge.runtime.backends.tensorrt.build import plan_build, polygraphy_argv

    plan = plan_build("10.3.0", "jetson-orin", "int8", graph_precision="int8",
                      inputs=[{"name": "s1", "shape": ["B", 3, 32, 64, 64]}])  # fmt: skip
    argv = polygraphy_argv("video_encoder.onnx", plan)
    assert argv[:5] == ["polygraphy", "run", "video_encoder.onnx", "--trt", "--onnxrt"]
    assert "--int8" in argv and "s1:[1,3,32,64,64]" in argv
    assert argv[argv.index("--trt-outputs") + 1 : argv.index("--trt-outputs") + 3] == [
        "mark",
        "all",
    ]


def test_parity_bars_are_defined_once_with_their_labels():
    from cotok_edge.build.parity import BARS, check_bars

    rows = {
        "torch fp32": {"accuracy": 0.80},
        "onnxruntime fp32": {"agreement": 1.0, "max_logit_error": 2e-5},
        "onnxruntime int8 (QAT)": {"accuracy": 0.795, "agreement": 0.96},
    }
    bars = check_bars(rows, "int8")
    assert list(bars) == [
        "fp32 answers identical", "fp32 max logit error",
        "onnxruntime int8 (QAT) accuracy drop (points)", "onnxruntime int8 (QAT) answer agreement",
    ]  # fmt: skip
    assert [b["bar"] for b in bars.values()] == [">= 1.0", "<= 1e-4", "<= 1.0", ">= 0.97"]
    assert bars["onnxruntime int8 (QAT) accuracy drop (points)"]["value"] == pytest.approx(0.5)
    assert [b["passed"] for b in bars.values()] == [True, True, True, False]
    assert list(check_bars(rows, "fp32")) == ["fp32 answers identical", "fp32 max logit error"]
    assert len({b.key for b in BARS}) == len(BARS)


def test_qat_moves_weights_but_keeps_batchnorm_statistics() -> None:
    # A few QAT steps on a few clips must not refit the BatchNorms that TensorRT folds.
    from cotok_edge.export.qat import qat_finetune, quantize_ptq

    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny").with_streams(["s1"]))
    batch = model.example_inputs(2)
    batch["answer_ids"] = torch.tensor([[5, 2], [6, 2]])
    quantize_ptq(model, [batch], progress=False)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    before = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
              for m in norms]  # fmt: skip
    weight = model.backbones["s1"].stem[0][0].weight.detach().clone()
    qat_finetune(model, lambda step: batch, steps=2, lr=1e-3, warmup=1, progress=False)
    for m, (mean, var, seen) in zip(norms, before, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert torch.equal(m.num_batches_tracked, seen)
    assert not torch.equal(model.backbones["s1"].stem[0][0].weight, weight)
    assert not model.training


def test_agreement_is_also_measured_where_the_reference_is_sure() -> None:
    from cotok_edge.export.scoring import SURE_MARGIN, Predictions, compare, first_token_margin

    # Three questions, one answer step, a vocabulary of 3: FP32 is sure of the first two.
    ref_logits = np.array([[[5.0, 0.0, 0.0]], [[0.0, 4.0, 1.0]], [[1.0, 1.5, 0.0]]], np.float32)
    ref = Predictions(np.array([[0], [1], [1]]), ref_logits)
    np.testing.assert_allclose(first_token_margin(ref_logits), [5.0, 3.0, 0.5])
    assert SURE_MARGIN == 2.0
    got = Predictions(np.array([[0], [2], [0]]), ref_logits + 0.1)  # flips a sure and a tie
    r = compare(ref, got)
    assert r["agreement"] == pytest.approx(1 / 3)
    assert r["sure_agreement"] == pytest.approx(1 / 2) and r["sure_share"] == pytest.approx(2 / 3)
    unsure = Predictions(ref.ids, np.zeros_like(ref_logits))
    assert compare(unsure, unsure)["sure_agreement"] is None
