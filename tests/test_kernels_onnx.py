"""ONNX export of TokenLearner calls as single TensorRT-plugin nodes (TorchScript exporter)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from cotok_edge.kernels.onnx_plugin import (
    ONNX_DOMAIN,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    export_tokenlearner_as_plugin,
)
from torch import nn

from cotok_edge.model.tokenlearner import TokenLearner

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")


class TwoTokenLearners(nn.Module):
    """Two TokenLearner calls, one conditioned and one not, as a stand-in for the model."""

    def __init__(self, dim: int = 32, cond_dim: int = 16, tokens: int = 4):
        super().__init__()
        self.conditioned = TokenLearner(dim, tokens, cond_dim=cond_dim)
        self.plain = TokenLearner(dim, tokens)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z1, _ = self.conditioned(x, c)
        z2, _ = self.plain(x)
        return torch.cat([z1, z2], dim=1)


def _export(
    model: nn.Module, args: tuple, opset: int = 17, dynamic: bool = True
) -> onnx.ModelProto:
    f = io.BytesIO()
    axes = {"x": {0: "B", 1: "N"}, "c": {0: "B"}, "z": {0: "B"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            model, args, f, dynamo=False, opset_version=opset,
            input_names=["x", "c"], output_names=["z"],
            dynamic_axes=axes,
        )  # fmt: skip
    return onnx.load_from_string(f.getvalue())


def _plugin_nodes(m: onnx.ModelProto) -> list:
    return [n for n in m.graph.node if n.op_type == PLUGIN_NAME]


@pytest.mark.parametrize("opset", [17, 19])
def test_plugin_export_has_one_node_per_call(opset):
    torch.manual_seed(0)
    model = TwoTokenLearners().eval()
    args = (torch.randn(2, 10, 32), torch.randn(2, 16))
    with export_tokenlearner_as_plugin():
        m = _export(model, args, opset)
    onnx.checker.check_model(m, full_check=True)

    nodes = _plugin_nodes(m)
    assert len(nodes) == 2
    # Nothing of the reference's decomposition is left behind.
    op_types = {n.op_type for n in m.graph.node}
    assert not {"Softmax", "LayerNormalization", "Erf", "ReduceMean"} & op_types
    assert {n.domain for n in nodes} == {ONNX_DOMAIN}
    assert any(o.domain == ONNX_DOMAIN for o in m.opset_import)
    # 8 inputs for the conditioned call (cond_bias last), 7 for the plain one.
    assert sorted(len(n.input) for n in nodes) == [7, 8]
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["plugin_version"] == PLUGIN_VERSION.encode()
        assert attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
        assert attrs["eps"] == pytest.approx(1e-6)
    out = m.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert out.shape.dim[1].dim_value == 8 and out.shape.dim[2].dim_value == 32


def test_plugin_inputs_are_the_weights_in_contract_order():
    """Inputs 1..6 are ln_weight, ln_bias, w1, b1, w2, b2 with the plugin's shapes."""
    model = TwoTokenLearners().eval()
    with export_tokenlearner_as_plugin():
        m = _export(model, (torch.randn(1, 6, 32), torch.randn(1, 16)))
    inits = {i.name: tuple(i.dims) for i in m.graph.initializer}
    # Weights may pass through Identity nodes when the exporter deduplicates them.
    alias = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Identity"}
    for node in _plugin_nodes(m):
        shapes = [inits.get(alias.get(name, name)) for name in node.input[1:7]]
        assert shapes == [(32,), (32,), (64, 32), (64,), (4, 64), (4,)]
        assert node.input[0] == "x"


# The reference's own decomposition is exported with static shapes here: its
# LayerNorm takes normalized_shape from h.shape[-1], which the TorchScript
# exporter cannot turn into a constant once N and B are dynamic.


def test_without_the_context_the_export_is_plain_onnx():
    model = TwoTokenLearners().eval()
    m = _export(model, (torch.randn(1, 6, 32), torch.randn(1, 16)), dynamic=False)
    assert _plugin_nodes(m) == []
    assert sum(n.op_type == "Softmax" for n in m.graph.node) == 2


def test_context_is_restored_after_an_error():
    model = TwoTokenLearners().eval()
    with pytest.raises(RuntimeError, match="boom"), export_tokenlearner_as_plugin():
        raise RuntimeError("boom")
    m = _export(model, (torch.randn(1, 6, 32), torch.randn(1, 16)), dynamic=False)
    assert _plugin_nodes(m) == []


def test_eager_values_inside_the_context_are_the_reference():
    """Tracing runs the op's CPU kernel, which is the reference: the block changes no numbers."""
    model = TwoTokenLearners().eval()
    args = (torch.randn(2, 10, 32), torch.randn(2, 16))
    expected = model(*args)
    with export_tokenlearner_as_plugin():
        got = model(*args)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


class QuestionPart(nn.Module):
    """The model's question-dependent graph: projected video features + question -> memory."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        state, _ = self.model.joint_memory({"s1": s1, "s2": s2, "s3": s3}, ids, mask)
        return state.tokens


def test_model_plugin_variant_has_one_node_per_stream_per_step():
    from cotok_edge import CoTokConfig, CoTokVQA

    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.preset("tiny")).eval()
    inputs = model.example_inputs(1)
    with torch.no_grad():
        video = model.encode_video({n: inputs[n] for n in model.stream_names})
    args = (video["s1"], video["s2"], video["s3"], inputs["question_ids"], inputs["question_mask"])
    f = io.BytesIO()
    with warnings.catch_warnings(), export_tokenlearner_as_plugin():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(QuestionPart(model), args, f, dynamo=False, opset_version=17)
    plugin = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(plugin, full_check=True)
    cfg = model.config
    assert len(_plugin_nodes(plugin)) == len(cfg.streams) * cfg.steps
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(QuestionPart(model), args, f, dynamo=False, opset_version=17)
    plain = onnx.load_from_string(f.getvalue())
    assert _plugin_nodes(plain) == []
    assert sum(n.op_type == "Softmax" for n in plain.graph.node) >= len(cfg.streams) * cfg.steps
