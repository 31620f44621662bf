"""Export each TokenLearner call as ONE custom ONNX node that TensorRT maps to the plugin.

TensorRT's ONNX parser imports a node whose ``op_type`` it has no importer for
through its fallback plugin importer: it asks the plugin registry for a
creator named ``op_type``, with the version taken from the node's string
attribute ``plugin_version`` (default ``"1"``) and the namespace from
``plugin_namespace`` (default ``""``); the node's other attributes become the
creator's plugin fields. The library built from ``csrc/`` registers exactly
that creator (see ``csrc/tokenlearner_plugin.h``), so a graph exported here
parses into one plugin layer per TokenLearner.

Usage, with the TorchScript exporter (``dynamo=False``), the one the project
uses for modelopt Q/DQ graphs::

    with export_tokenlearner_as_plugin():
        torch.onnx.export(model, args, "model.onnx", dynamo=False, opset_version=17)

Inside the ``with`` block every ``TokenLearner`` forward (that does not ask for
its maps) goes through ``torch.ops.cotok.tokenlearner_fused``, whose CPU
kernel is the reference, so tracing still computes real values; the
symbolic registered for that op emits the plugin node. Outside the block the
model exports as plain ONNX operators (what ONNX Runtime runs).

Node contract (must match the plugin): domain ``cotok``, op_type
``CoTokTokenLearner``; inputs ``x [B, N, C]``, ``ln_weight [C]``,
``ln_bias [C]``, ``w1 [H, C]``, ``b1 [H]``, ``w2 [S, H]``, ``b2 [S]`` and, when
the call has one, ``cond_bias [B, C]`` last; one output ``z [B, S, C]`` of the
dtype of ``x``; attributes ``plugin_version="2"``, ``plugin_namespace="cotok"``,
``eps`` (float, the LayerNorm epsilon).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from cotok_edge.contract import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from cotok_edge.contract import PLUGIN_ONNX_DOMAIN as ONNX_DOMAIN

from ._dispatch import STATE, ensure_registered
from .reference import LN_EPS

__all__ = [
    "ONNX_DOMAIN",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "export_tokenlearner_as_plugin",
]

_OP_QUALNAME = "cotok::tokenlearner_fused"
# Smallest opset the symbolic is registered for; it applies to every later one.
_SYMBOLIC_OPSET = 9


def _is_none(value: torch._C.Value | None) -> bool:
    return value is None or value.node().mustBeNone()


def _plugin_symbolic(
    g: torch._C.Graph,
    x: torch._C.Value,
    cond_bias: torch._C.Value,
    ln_weight: torch._C.Value,
    ln_bias: torch._C.Value,
    w1: torch._C.Value,
    b1: torch._C.Value,
    w2: torch._C.Value,
    b2: torch._C.Value,
) -> torch._C.Value:
    inputs = [x, ln_weight, ln_bias, w1, b1, w2, b2]
    # cond_bias goes last so that a call without one is simply a 7-input node.
    if not _is_none(cond_bias):
        inputs.append(cond_bias)
    z = g.op(
        f"{ONNX_DOMAIN}::{PLUGIN_NAME}",
        *inputs,
        plugin_version_s=PLUGIN_VERSION,
        plugin_namespace_s=PLUGIN_NAMESPACE,
        eps_f=LN_EPS,
    )
    # Give the output a dtype and rank (shape inference cannot see inside a
    # custom op); unknown sizes stay symbolic.
    try:
        xs, ws = x.type().varyingSizes(), w2.type().varyingSizes()
        z.setType(x.type().with_sizes([xs[0], ws[0], xs[2]]))
    except (RuntimeError, AttributeError, TypeError, IndexError):
        z.setType(x.type())
    return z


@contextlib.contextmanager
def export_tokenlearner_as_plugin() -> Iterator[None]:
    """Within the block, TokenLearner calls export as single ``cotok::CoTokTokenLearner`` nodes.

    For ``torch.onnx.export(..., dynamo=False)``. Nested use is fine; the
    symbolic is removed and the model's dispatch restored on exit.
    """
    ensure_registered()
    first = STATE.export_depth == 0
    if first:
        torch.onnx.register_custom_op_symbolic(_OP_QUALNAME, _plugin_symbolic, _SYMBOLIC_OPSET)
    STATE.export_depth += 1
    try:
        yield
    finally:
        STATE.export_depth -= 1
        if STATE.export_depth == 0:
            torch.onnx.unregister_custom_op_symbolic(_OP_QUALNAME, _SYMBOLIC_OPSET)
