"""The export checks on small hand-built ONNX graphs, and the operator table itself."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[export]')")
from cotok_edge.export.checks import (  # noqa: E402
    OnnxCheckError,
    check_model,
    operator_table,
    operator_tables,
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


def _vi(name, elem=F, shape=(2, 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _relu_model():
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x")], [_vi("y")])


@pytest.mark.parametrize("target", ["jetson-orin", "desktop", "cpu"])
def test_a_supported_graph_passes(target):
    report = check_model(_relu_model(), target)
    assert report.ops == {"Relu": 1} and report.plugin_nodes == 0
    assert report.shape_inference == "strict"


def test_unsupported_op_fails_naming_op_node_and_tensorrt_version():
    # Det is listed as not supported by the TensorRT ONNX parser (10.x and 11.x tables).
    m = _model(
        [helper.make_node("Det", ["x"], ["y"], name="the_det")],
        [_vi("x", shape=(3, 3))],
        [_vi("y", shape=())],
    )
    with pytest.raises(OnnxCheckError) as e:
        check_model(m, "jetson-orin", graph_name="toy.onnx")
    msg = str(e.value)
    assert "'the_det'" in msg and "op Det" in msg and "TensorRT 10.3" in msg
    assert "listed as not supported" in msg and "toy.onnx" in msg
    # The CPU target runs ONNX Runtime, which implements Det.
    check_model(m, "cpu")


def test_undocumented_op_for_10_3_fails_but_passes_on_11():
    # Gelu (opset 20) is documented from 10.x's later tables on, not in the 10.3 floor.
    m = _model(
        [helper.make_node("Gelu", ["x"], ["y"], name="gelu")], [_vi("x")], [_vi("y")], opset=20
    )
    with pytest.raises(OnnxCheckError, match="Gelu is not in the supported operator list"):
        check_model(m, "jetson-orin")
    assert "Gelu" in operator_table("11")["supported"]


def test_every_problem_is_listed_at_once():
    m = _model(
        [
            helper.make_node("Det", ["x"], ["d"], name="det1"),
            helper.make_node("Unique", ["x"], ["u"], name="uniq"),
        ],
        [_vi("x", shape=(3, 3))],
        [_vi("d", shape=()), _vi("u", shape=("n",))],
    )
    with pytest.raises(OnnxCheckError) as e:
        check_model(m, "desktop")
    nodes = " ".join(e.value.problems)
    assert "det1" in nodes and "uniq" in nodes


def _plugin_model():
    node = helper.make_node(
        "CoTokTokenLearner", ["x"], ["z"], name="tl0", domain="cotok",
        plugin_version="2", plugin_namespace="cotok", eps=1e-6,
    )  # fmt: skip
    return _model([node], [_vi("x")], [_vi("z")], extra_opsets=[helper.make_opsetid("cotok", 1)])


def test_plugin_node_fails_unless_the_plugin_variant_is_exported():
    with pytest.raises(
        OnnxCheckError, match=r"'tl0'.*plugin op cotok::CoTokTokenLearner.*plugin variant"
    ):
        check_model(_plugin_model(), "jetson-orin")
    report = check_model(_plugin_model(), "jetson-orin", allow_plugins=True)
    assert report.plugin_nodes == 1 and report.ops == {"cotok::CoTokTokenLearner": 1}


def test_plugin_node_never_passes_on_cpu():
    with pytest.raises(OnnxCheckError, match="no TensorRT"):
        check_model(_plugin_model(), "cpu", allow_plugins=True)


def test_other_custom_domains_fail():
    node = helper.make_node("FusedGemm", ["x"], ["y"], name="ms", domain="com.microsoft")
    m = _model(
        [node], [_vi("x")], [_vi("y")], extra_opsets=[helper.make_opsetid("com.microsoft", 1)]
    )
    with pytest.raises(OnnxCheckError, match="custom domain 'com.microsoft'"):
        check_model(m, "desktop", allow_plugins=True)


def test_opset_outside_the_parser_range_fails():
    with pytest.raises(
        OnnxCheckError, match=r"opset 21 is outside the range TensorRT 10.3 parses \(9..20\)"
    ):
        m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=21)
        check_model(m, "jetson-orin-agx")


def test_nodes_inside_subgraphs_are_checked():
    then_g = helper.make_graph(
        [helper.make_node("Det", ["x"], ["t"], name="inner_det")], "then", [], [_vi("t", shape=())]
    )
    else_g = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["e"], name="inner_sum", keepdims=0)],
        "else", [], [_vi("e", shape=())],
    )  # fmt: skip
    node = helper.make_node(
        "If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g
    )
    m = _model(
        [node], [_vi("c", TensorProto.BOOL, ()), _vi("x", shape=(3, 3))], [_vi("y", shape=())]
    )
    with pytest.raises(OnnxCheckError, match=r"branch/then_branch/inner_det"):
        check_model(m, "jetson-orin")


def test_unsqueeze_axes_must_be_constant_on_10_3():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=1),
        helper.make_node("Sub", ["s", "one"], ["axes"], name="sub"),
        helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq"),
    ]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    m = _model(nodes, [_vi("x")], [_vi("y", shape=("a", "b", "c"))], inits=[one])
    with pytest.raises(OnnxCheckError, match=r"'unsq': Unsqueeze input 1 .* build-time constant"):
        check_model(m, "jetson-orin")
    # Constant axes pass.
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    ok = _model(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq")],
        [_vi("x")], [_vi("y", shape=(1, 2, 4))], inits=[axes],
    )  # fmt: skip
    check_model(ok, "jetson-orin")


def _qdq_model(zero_point: int):
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zp = numpy_helper.from_array(np.array(zero_point, np.int8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq"),
    ]
    return _model(nodes, [_vi("x")], [_vi("y")], inits=[scale, zp])


def test_qdq_zero_point_must_be_zero():
    check_model(_qdq_model(0), "jetson-orin")
    with pytest.raises(OnnxCheckError, match=r"'q': QuantizeLinear zero point is not zero"):
        check_model(_qdq_model(3), "jetson-orin")


def test_uint8_inside_the_graph_fails_for_tensorrt():
    nodes = [
        helper.make_node("Cast", ["x"], ["u"], name="to_u8", to=TensorProto.UINT8),
        helper.make_node("Cast", ["u"], ["y"], name="back", to=F),
    ]
    m = _model(nodes, [_vi("x")], [_vi("y")])
    with pytest.raises(OnnxCheckError, match=r"'to_u8': output 'u' is UINT8 inside the graph"):
        check_model(m, "desktop")
    check_model(m, "cpu")


def test_checker_and_shape_inference_errors_are_reported():
    bad = _model([helper.make_node("Relu", ["nope"], ["y"], name="r")], [_vi("x")], [_vi("y")])
    with pytest.raises(OnnxCheckError, match=r"onnx.checker"):
        check_model(bad, "cpu")
    # Add of [2, 4] and [3] cannot broadcast: strict shape inference rejects it.
    mismatch = _model(
        [helper.make_node("Add", ["x", "b"], ["y"], name="add")],
        [_vi("x"), _vi("b", shape=(3,))],
        [_vi("y", shape=("a", "b"))],
    )
    with pytest.raises(OnnxCheckError, match=r"(?i)shape ?inference"):
        check_model(mismatch, "cpu")


def test_operator_tables_name_their_source_and_are_consistent():
    tables = operator_tables()["tables"]
    assert set(tables) == {"10.3", "10.15", "11"}
    for key, t in tables.items():
        assert "operators.md" in t["source"] or "release notes" in t["source"], key
        assert not set(t["supported"]) & set(t["unsupported"]), key
        assert t["opset_min"] == 9
    # Support only grows: 10.3 -> 10.15 -> 11.
    assert set(tables["10.3"]["supported"]) <= set(tables["10.15"]["supported"])
    assert set(tables["10.15"]["supported"]) <= set(tables["11"]["supported"])
    # Names are real ONNX ops (a few legacy ones the parser still imports are not in onnx.defs).
    legacy = {"ImageScaler", "ParametricSoftplus", "ScaledTanh", "Scatter", "Upsample", "Swish"}
    for t in tables.values():
        for op in t["supported"]:
            assert onnx.defs.has(op) or op in legacy, op
