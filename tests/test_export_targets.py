"""Deployment targets: the table and the up-front argument checks."""

from __future__ import annotations

import pytest
from cotok_edge.export.targets import (
    ONNX_OPSET,
    TARGETS,
    get_target,
    onnx_table_for,
    target_names,
    validate,
)


def test_the_designed_targets_exist():
    assert target_names() == [
        "jetson-orin",
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-orin-agx",
        "desktop",
        "cpu",
    ]


@pytest.mark.parametrize(
    "name", ["jetson-orin", "jetson-orin-nano", "jetson-orin-nx", "jetson-orin-agx"]
)
def test_orin_targets_are_sm87_tensorrt_10_3_without_fp8(name):
    t = get_target(name)
    assert t.gpu_arch == "sm_87" and t.compute_capabilities == ((8, 7),)
    assert t.tensorrt == ("10.3",) and t.cuda == "12.6" and t.jetpack == ("6.1", "6.2")
    assert set(t.precisions) == {"int8", "fp16", "fp32"}
    assert t.runtime == "tensorrt" and 0 < t.workspace_bytes <= 2 << 30


def test_dla_only_on_nx_and_agx():
    assert {n for n, t in TARGETS.items() if t.dla_cores} == {"jetson-orin-nx", "jetson-orin-agx"}


def test_every_target_exports_an_opset_its_tensorrt_parses():
    from cotok_edge.export.checks import operator_table

    for t in TARGETS.values():
        assert t.onnx_opset == ONNX_OPSET
        for v in t.tensorrt:
            table = operator_table(onnx_table_for(v))
            assert table["opset_min"] <= t.onnx_opset <= table["opset_max"], (t.name, v)


def test_unknown_target_suggests_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown target 'jetson-orin-nanoo'.*'jetson-orin-nano'"):
        get_target("jetson-orin-nanoo")
    with pytest.raises(ValueError, match=r"did you mean 'desktop'"):
        validate("dekstop", "fp16")


def test_dla_on_orin_nano_is_refused():
    with pytest.raises(ValueError, match="Orin Nano has no DLA"):
        validate("jetson-orin-nano", "int8", dla=True)


def test_dla_on_generic_orin_names_the_modules_that_have_it():
    with pytest.raises(ValueError, match="jetson-orin-nx or jetson-orin-agx"):
        validate("jetson-orin", "fp16", dla=True)


def test_dla_needs_fp16_or_int8():
    with pytest.raises(ValueError, match="DLA runs FP16 and INT8 only"):
        validate("jetson-orin-agx", "fp32", dla=True)
    assert validate("jetson-orin-agx", "int8", dla=True).dla_cores == 2
    assert validate("jetson-orin-nx", "fp16", dla=True).name == "jetson-orin-nx"


def test_dla_on_desktop_and_cpu_is_refused():
    for name in ("desktop", "cpu"):
        with pytest.raises(ValueError, match="no DLA"):
            validate(name, "int8", dla=True)


def test_fp8_on_orin_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"no FP8 tensor cores"):
        validate("jetson-orin", "fp8")
    with pytest.raises(ValueError, match="not available on target 'desktop'"):
        validate("desktop", "fp8")


def test_unknown_precision_and_fp16_on_cpu():
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        validate("desktop", "int4")
    with pytest.raises(ValueError, match="not available on target 'cpu'"):
        validate("cpu", "fp16")
    assert validate("cpu", "int8").runtime == "onnxruntime"


def test_plugin_variant_is_refused_on_cpu():
    with pytest.raises(ValueError, match="plugin variant cannot run on target 'cpu'"):
        validate("cpu", "fp32", plugin=True)
    validate("jetson-orin-nano", "fp16", plugin=True)


def test_to_dict_is_json_ready():
    import json

    d = get_target("jetson-orin-nx").to_dict()
    assert json.loads(json.dumps(d))["compute_capabilities"] == ["8.7"]


def test_table_keys_for_tensorrt_versions():
    assert onnx_table_for("10.3") == "10.3"
    assert onnx_table_for("10.x") == "10.3"
    assert onnx_table_for("11.x") == "11"
    with pytest.raises(ValueError):
        onnx_table_for("9.2")
