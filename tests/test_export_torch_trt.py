"""Torch-TensorRT path: version pinning, and compile + save where torch_tensorrt and a GPU are."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from cotok_edge.export.torch_trt import (
    KNOWN_PAIRS,
    PIN,
    _minor,
    check_version_pair,
    compile_and_save,
)

from cotok_edge import CoTokConfig, CoTokVQA

HAVE_TORCH_TRT = importlib.util.find_spec("torch_tensorrt") is not None


def test_matching_minor_releases_pass():
    check_version_pair("2.13.0+cpu", "2.13.0")
    check_version_pair("2.13.1", "2.13.0.post1")


def test_a_mismatched_pair_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"torch-tensorrt==2.13.\* \(this project pins"):
        check_version_pair("2.13.0", "2.14.0")
    with pytest.raises(ValueError, match="not a version"):
        check_version_pair("main", "2.13.0")


def test_the_recorded_pair_is_for_the_installed_torch():
    major, minor = _minor(torch.__version__)
    assert f"{major}.{minor}" in KNOWN_PAIRS, (torch.__version__, KNOWN_PAIRS)
    assert PIN == f"torch-tensorrt=={major}.{minor}.*"
    assert KNOWN_PAIRS[f"{major}.{minor}"]["torch"] == f">={major}.{minor}.0,<{major}.{minor + 1}.0"


def test_cpu_target_is_refused_before_anything_is_imported(tmp_path):
    model = CoTokVQA(CoTokConfig.preset("tiny"))
    with pytest.raises(ValueError, match="not available on target 'cpu'"):
        compile_and_save(model, tmp_path, target="cpu", precision="fp16")
    with pytest.raises(ValueError, match="has no GPU"):
        compile_and_save(model, tmp_path, target="cpu", precision="fp32")


@pytest.mark.skipif(HAVE_TORCH_TRT, reason="torch_tensorrt is installed; this checks the message")
def test_without_torch_tensorrt_the_error_names_the_pin(tmp_path):
    model = CoTokVQA(CoTokConfig.preset("tiny"))
    with pytest.raises(RuntimeError, match=r"torch_tensorrt is not installed \(pip install"):
        compile_and_save(model, tmp_path, target="desktop", precision="fp32")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not (HAVE_TORCH_TRT and torch.cuda.is_available()),
    reason="needs torch_tensorrt and a CUDA GPU (not installable on the CPU machines)",
)
def test_compile_and_save_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny")).eval()
    meta = compile_and_save(model, tmp_path, target="desktop", precision="fp32", batch=1)
    assert set(meta["files"]) == {"video_encoder.ep", "question_decoder.ep"}
    assert (tmp_path / "torch_trt.json").exists()
    enc = torch.export.load(str(tmp_path / "video_encoder.ep")).module()
    inputs = model.example_inputs(1)
    out = enc(*(inputs[s].cuda() for s in model.stream_names))
    assert out[0].shape[0] == 1
