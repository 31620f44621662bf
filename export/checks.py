"""Checks on every exported graph: what TensorRT cannot parse fails here, not on the device.

1. ``onnx.checker.check_model(full_check=True)``: structure, types, topological order.
2. ONNX shape inference in strict mode (any inference error is an error).
3. Opset: the default-domain opset lies in the range every TensorRT version of the
   target parses.
4. Operators: every default-domain node (subgraphs included) is a supported row of
   the operator table of each TensorRT version of the target (``trt_onnx_ops.json``,
   built from the onnx-tensorrt operator documentation; see its ``source`` fields),
   and meets the table's checkable restrictions (constant inputs, zero Q/DQ zero
   points). Custom-domain nodes are accepted only when they are this project's
   TensorRT plugin node and the caller exported the plugin variant.
5. UINT8 only at graph inputs/outputs (TensorRT's parser takes it only there).

All problems are gathered before raising, so one run lists every offending node.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from cotok_edge.contract import PLUGIN_NAME, PLUGIN_ONNX_DOMAIN

from .targets import Target, get_target, onnx_table_for

TABLE_FILE = Path(__file__).with_name("trt_onnx_ops.json")
PLUGIN_DOMAIN = PLUGIN_ONNX_DOMAIN
PLUGIN_OP = PLUGIN_NAME
_DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxCheckError(ValueError):
    """An exported graph failed a check; ``problems`` lists one line per finding."""

    def __init__(self, graph: str, problems: list[str]):
        self.graph = graph
        self.problems = problems
        lines = "\n  - ".join(problems)
        super().__init__(f"ONNX graph {graph!r} failed {len(problems)} check(s):\n  - {lines}")


@dataclass
class CheckReport:
    """What the checks saw (goes into the manifest).

    ops: count per ``domain::op_type`` (default domain without prefix).
    tables: the operator tables checked against, by TensorRT version.
    """

    graph: str
    target: str
    opset: int
    ops: dict[str, int]
    plugin_nodes: int
    tables: list[str]
    shape_inference: str = "strict"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "target": self.target,
            "opset": self.opset,
            "ops": dict(sorted(self.ops.items())),
            "plugin_nodes": self.plugin_nodes,
            "tensorrt_tables": self.tables,
            "shape_inference": self.shape_inference,
            "notes": self.notes,
        }


@functools.cache
def operator_tables() -> dict[str, Any]:
    """The parsed ``trt_onnx_ops.json``: ``{"tables": {version: {...}}, ...}``."""
    return json.loads(TABLE_FILE.read_text())


def operator_table(version_key: str) -> dict[str, Any]:
    """One TensorRT version's table (``supported``, ``unsupported``, ``restrictions``, ...)."""
    tables = operator_tables()["tables"]
    if version_key not in tables:
        raise KeyError(f"no operator table {version_key!r}; have {sorted(tables)}")
    return tables[version_key]


def iter_nodes(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[str, onnx.NodeProto]]:
    """Every node with a readable location, descending into If/Loop/Scan subgraphs."""
    for i, node in enumerate(graph.node):
        where = f"{path}{node.name or f'#{i}'}"
        yield where, node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g, f"{where}/{attr.name}/")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(attr.graphs):
                    yield from iter_nodes(g, f"{where}/{attr.name}[{j}]/")


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return imp.version
    raise ValueError("model imports no default-domain ONNX opset")


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Tensors known at build time: initializers, Constant outputs, Identity of those."""
    known = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:  # topologically sorted, so one pass suffices
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            for attr in node.attribute:
                if attr.name == "value":
                    known[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input and node.input[0] in known:
            known[node.output[0]] = known[node.input[0]]
    return known


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def check_model(
    model: onnx.ModelProto | str | Path,
    target: str | Target,
    *,
    allow_plugins: bool = False,
    graph_name: str | None = None,
) -> CheckReport:
    """Run all checks on ``model`` for ``target``; raise :class:`OnnxCheckError` on any problem.

    Args:
        model: a loaded model or a path to one.
        target: target name or :class:`Target`; its TensorRT versions choose the
            operator tables (none for ``cpu``: ONNX Runtime implements every
            default-domain op of the opsets it reads).
        allow_plugins: accept ``cotok::CoTokTokenLearner`` nodes (the plugin variant).
        graph_name: name used in messages (defaults to the graph's name).

    Returns:
        A :class:`CheckReport` (op counts, tables used, how shape inference ran).
    """
    t = get_target(target)
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    name = graph_name or model.graph.name or "graph"
    problems: list[str] = []

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        # full_check runs shape inference too, so its errors can surface here first.
        raise OnnxCheckError(name, [f"onnx.checker (full_check): {e}"]) from e
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise OnnxCheckError(name, [f"ONNX shape inference (strict): {e}"]) from e

    opset = default_opset(model)
    keys = sorted({onnx_table_for(v) for v in t.tensorrt})
    tables = {k: operator_table(k) for k in keys}
    for key, table in tables.items():
        if not table["opset_min"] <= opset <= table["opset_max"]:
            problems.append(
                f"opset {opset} is outside the range TensorRT {key} parses "
                f"({table['opset_min']}..{table['opset_max']})"
            )
    if t.runtime == "onnxruntime" and opset > onnx.defs.onnx_opset_version():
        problems.append(f"opset {opset} is newer than this onnx package knows")

    consts = _constant_values(model)
    counts: Counter[str] = Counter()
    plugin_nodes = 0
    for where, node in iter_nodes(model.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            key = f"{node.domain}::{node.op_type}"
            counts[key] += 1
            if node.domain == PLUGIN_DOMAIN and node.op_type == PLUGIN_OP:
                plugin_nodes += 1
                if not allow_plugins:
                    problems.append(
                        f"node {where!r}: plugin op {key} in a graph exported without the "
                        "plugin variant (only the plugin variant may carry TensorRT plugin nodes)"
                    )
                elif not t.tensorrt:
                    problems.append(
                        f"node {where!r}: plugin op {key} on target {t.name!r}, which has no "
                        "TensorRT (ONNX Runtime cannot run it)"
                    )
            else:
                problems.append(
                    f"node {where!r}: op {key} is in custom domain {node.domain!r}, which no "
                    f"runtime of target {t.name!r} implements"
                )
            continue
        counts[node.op_type] += 1
        for key, table in tables.items():
            if node.op_type not in table["supported"]:
                status = (
                    "listed as not supported"
                    if node.op_type in table["unsupported"]
                    else "not in the supported operator list"
                )
                problems.append(
                    f"node {where!r}: op {node.op_type} is {status} for TensorRT {key}'s ONNX "
                    f"parser (target {t.name!r}; table source: export/trt_onnx_ops.json)"
                )
                continue
            rule = table["restrictions"].get(node.op_type)
            if rule:
                problems.extend(_check_restriction(where, node, rule, consts, key))

    notes = [
        f"operator table {key} is derived from neighbouring versions' documentation"
        for key, table in tables.items()
        if table.get("derived")
    ]
    types = _elem_types(inferred)
    io_names = {v.name for v in (*model.graph.input, *model.graph.output)}
    if t.tensorrt:
        for where, node in iter_nodes(model.graph):
            for out in node.output:
                if out not in io_names and types.get(out) == onnx.TensorProto.UINT8:
                    problems.append(
                        f"node {where!r}: output {out!r} is UINT8 inside the graph; TensorRT "
                        "takes UINT8 only as a network input or output"
                    )
    if problems:
        raise OnnxCheckError(name, problems)
    return CheckReport(
        graph=name,
        target=t.name,
        opset=opset,
        ops=dict(counts),
        plugin_nodes=plugin_nodes,
        tables=keys,
        notes=notes,
    )


def _check_restriction(
    where: str,
    node: onnx.NodeProto,
    rule: dict[str, Any],
    consts: dict[str, np.ndarray],
    key: str,
) -> list[str]:
    out = []
    for idx in rule.get("constant_inputs", []):
        if idx < len(node.input) and node.input[idx] and node.input[idx] not in consts:
            out.append(
                f"node {where!r}: {node.op_type} input {idx} ({node.input[idx]!r}) must be a "
                f"build-time constant for TensorRT {key} ({rule.get('note', '')})"
            )
    if rule.get("zero_point_zero") and len(node.input) > 2 and node.input[2]:
        zp = consts.get(node.input[2])
        if zp is None:
            out.append(
                f"node {where!r}: {node.op_type} zero point {node.input[2]!r} is not a constant; "
                f"TensorRT {key} needs a constant zero"
            )
        elif np.any(zp.astype(np.float64) != 0):
            out.append(
                f"node {where!r}: {node.op_type} zero point is not zero; TensorRT {key} "
                "supports symmetric quantization only"
            )
    return out
