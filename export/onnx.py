"""Export ``CoTokVQA`` as two ONNX graphs for TensorRT and ONNX Runtime.

Graphs (names are the contract the runtime and the build rely on):

``video_encoder.onnx``
    inputs ``s1, s2, s3`` uint8 ``[B, 3, T_s, H_s, W_s]`` (raw frames; the scaling to
    [0, 1] and the mean/std normalisation are inside the graph) -> outputs
    ``v_s1 [B, N_1, d]``, ``v_s2``, ``v_s3``: the projected stream features. It does not
    depend on the question, so a runtime runs it once per clip.

``question_decoder.onnx``
    inputs ``v_s1, v_s2, v_s3``, ``question_ids [B, L]`` int64 and ``question_mask [B, L]``
    bool, with ``L = config.text.max_question_tokens`` fixed (pad with ``pad_id`` and
    mask False) -> outputs ``answer_ids [B, A]`` int64 with ``A =
    config.text.max_answer_tokens``, ``answer_scores [B]`` (mean log-probability of the
    answer tokens up to and including EOS) and, by default, ``answer_logits [B, A, V]``
    (the logits each greedy step chose from; parity is measured on them, on the very
    graph that is deployed).

Variants of the decoder: ``plain`` (standard ONNX operators: what ONNX Runtime runs and
what TensorRT parses without plugins), ``plugin`` (each TokenLearner call is one
``cotok::CoTokTokenLearner`` node for the fused TensorRT plugin) and ``explain`` (plain,
plus ``maps_s1 [B, K, S, N_1]``, ... : each co-tokenization step's TokenLearner maps, for
explanations; maps always come from the reference TokenLearner, so this variant has no
plugin form).

Decoding is greedy and unrolled in the graph: ``A`` copies of the decoder, step ``t``
reading the prefix of length ``t + 1``. Why not a decoder-step graph driven by the
runtime loop:

- every tensor shape is static (the prefix grows by a known amount per unrolled step),
  so TensorRT builds one engine with no shape-dependent control flow and no ``Loop``
  node, and a runtime makes one call per question instead of one host round trip
  (enqueue, synchronise, copy the token back) per generated token;
- the memory ``X_K`` never leaves the GPU between steps;
- it matches ``CoTokVQA.generate`` exactly: no KV cache there either (at most 8 steps
  over at most 9 positions), the same ops in the same order, so answers are identical;
  tokens after EOS become ``pad_id`` as in ``generate`` (``generate`` stops early when
  every row is done, and then every remaining token would be ``pad_id`` anyway).
The cost is that a graph always runs all ``A`` steps even when every answer ended
earlier; answers here are at most 8 tokens, so that bound is small.

Batch: dynamic by default (``B`` symbolic in both graphs, everything else static), so
ONNX Runtime can batch questions and TensorRT builds one optimisation profile
(min 1, opt 1, max ``target.max_batch``); a fixed batch size can be asked for instead.
The choice is written into the returned spec. The exporter is the TorchScript one
(``torch.onnx.export(..., dynamo=False)``) because ModelOpt's fake-quant Q/DQ nodes do
not export with ``dynamo=True``.

Every file is checked (``export/checks.py``) before it is written, and written
atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from cotok_edge.bundle import atomic_write_bytes
from cotok_edge.contract import (
    ANSWER_IDS,
    ANSWER_LOGITS,
    ANSWER_SCORES,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_ONNX_DOMAIN,
    PLUGIN_VERSION,
    QUESTION_DECODER,
    QUESTION_DECODER_EXPLAIN,
    QUESTION_DECODER_PLUGIN,
    QUESTION_IDS,
    QUESTION_MASK,
    VIDEO_ENCODER,
    feature_name,
    maps_name,
    onnx_file,
)
from cotok_edge.model.vqa import CoTokVQA, greedy_unrolled

from .checks import check_model
from .targets import Target, get_target

SPEC_FORMAT = "cotok-onnx/1"
VARIANTS = ("plain", "plugin", "explain")
FILES = {
    (VIDEO_ENCODER, "plain"): onnx_file(VIDEO_ENCODER),
    (QUESTION_DECODER, "plain"): onnx_file(QUESTION_DECODER),
    (QUESTION_DECODER, "plugin"): onnx_file(QUESTION_DECODER_PLUGIN),
    (QUESTION_DECODER, "explain"): onnx_file(QUESTION_DECODER_EXPLAIN),
}
BATCH_DIM = "B"
# Traced at batch 2 so no size-1 broadcast is baked into a dynamic-batch graph.
_TRACE_BATCH = 2


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, shape (``"B"`` = the dynamic batch)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphSpec:
    """One exported graph, as the manifest describes it."""

    graph: str
    variant: str
    path: Path
    opset: int
    batch: str | int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str
    size_bytes: int
    checks: dict[str, Any]
    plugin_nodes: int = 0
    export_warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "graph": self.graph,
            "variant": self.variant,
            "file": self.path.name,
            "opset": self.opset,
            "batch": self.batch,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "checks": self.checks,
            "export_warnings": self.export_warnings,
        }
        if self.plugin_nodes:
            d["plugin"] = {
                "op": f"{PLUGIN_ONNX_DOMAIN}::{PLUGIN_NAME}",
                "version": PLUGIN_VERSION,
                "namespace": PLUGIN_NAMESPACE,
                "nodes": self.plugin_nodes,
            }
        return d


# Graph modules -----------------------------------------------------------------------
class VideoEncoderGraph(nn.Module):
    """Streams ``[B, 3, T_s, H_s, W_s]`` (uint8 or float) -> projected features ``[B, N_s, d]``.

    Positional inputs and outputs in the model's stream order.
    """

    def __init__(self, model: CoTokVQA):
        super().__init__()
        self.model = model
        self.names = list(model.stream_names)

    def forward(self, *streams: Tensor) -> tuple[Tensor, ...]:
        video = self.model.encode_video(dict(zip(self.names, streams, strict=True)))
        return tuple(video[n] for n in self.names)


class QuestionDecoderGraph(nn.Module):
    """Projected features + question -> greedy answer (see the module docstring).

    Positional inputs: ``v_<stream>`` for each stream, ``question_ids``,
    ``question_mask``. Outputs: ``answer_ids``, ``answer_scores``, then
    ``answer_logits`` if ``logits``, then ``maps_<stream> [B, K, S, N_s]`` if ``maps``.
    """

    def __init__(self, model: CoTokVQA, *, logits: bool = True, maps: bool = False):
        super().__init__()
        self.model = model
        self.names = list(model.stream_names)
        self.logits = logits
        self.maps = maps

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        n = len(self.names)
        video = dict(zip(self.names, args[:n], strict=True))
        question_ids, question_mask = args[n], args[n + 1]
        state, maps = self.model.joint_memory(video, question_ids, question_mask, self.maps)
        ids, scores, logits = greedy_unrolled(self.model, state, question_ids)
        out: list[Tensor] = [ids, scores]
        if self.logits:
            out.append(logits)
        if self.maps:
            out.extend(torch.stack([m[s] for m in maps or []], dim=1) for s in self.names)
        return tuple(out)


# Specs --------------------------------------------------------------------------------
def _positions(model: CoTokVQA, name: str) -> int:
    t, h, w = model.feature_grids[name]
    return t * h * w


def graph_io(
    model: CoTokVQA,
    graph: str,
    *,
    batch: int | None = None,
    logits: bool = True,
    maps: bool = False,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of ``graph`` (``video_encoder`` or ``question_decoder``)."""
    b: int | str = BATCH_DIM if batch is None else batch
    cfg = model.config
    d = cfg.dim
    if graph == VIDEO_ENCODER:
        inputs = [TensorSpec(s, "uint8", (b, *model.stream_shape(s))) for s in model.stream_names]
        outputs = [
            TensorSpec(feature_name(s), "float32", (b, _positions(model, s), d))
            for s in model.stream_names
        ]
        return inputs, outputs
    if graph != QUESTION_DECODER:
        raise ValueError(
            f"unknown graph {graph!r}; expected {VIDEO_ENCODER!r} or {QUESTION_DECODER!r}"
        )
    length, answer = cfg.text.max_question_tokens, cfg.text.max_answer_tokens
    inputs = [
        TensorSpec(feature_name(s), "float32", (b, _positions(model, s), d))
        for s in model.stream_names
    ]
    inputs += [
        TensorSpec(QUESTION_IDS, "int64", (b, length)),
        TensorSpec(QUESTION_MASK, "bool", (b, length)),
    ]
    outputs = [
        TensorSpec(ANSWER_IDS, "int64", (b, answer)),
        TensorSpec(ANSWER_SCORES, "float32", (b,)),
    ]
    if logits:
        outputs.append(TensorSpec(ANSWER_LOGITS, "float32", (b, answer, cfg.text.vocab_size)))
    if maps:
        if cfg.video_tokenizer != "tokenlearner":
            raise ValueError("the explain variant needs TokenLearner maps; this config has none")
        outputs += [
            TensorSpec(
                maps_name(s),
                "float32",
                (b, cfg.steps, cfg.video_tokens(s), _positions(model, s)),
            )
            for s in model.stream_names
        ]
    return inputs, outputs


_ONNX_TYPES = {
    "uint8": onnx.TensorProto.UINT8,
    "float32": onnx.TensorProto.FLOAT,
    "int64": onnx.TensorProto.INT64,
    "bool": onnx.TensorProto.BOOL,
}


# Export -------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode for the export, restoring every submodule's flag afterwards.

    The exporter restores the *wrapper's* mode on exit, which would flip a model
    held inside a fresh (training-mode) wrapper back into training mode.
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def trace_inputs(model: CoTokVQA, batch: int) -> dict[str, Tensor]:
    """Example inputs for tracing: ``batch`` rows, full question length, a padded tail."""
    t = model.config.text
    inputs = model.example_inputs(batch, question_len=t.max_question_tokens, seed=0)
    # A padded tail, so the trace sees the mask in use (values do not shape the graph).
    inputs["question_mask"][:, -3:] = False
    inputs["question_ids"][:, -3:] = t.pad_id
    return inputs


def remove_noop_casts(model: onnx.ModelProto) -> int:
    """Drop ``Cast`` nodes whose input already has the target type; returns how many.

    The model's fp32-statistics RMSNorm exports as Cast(float->float) pairs. They are
    no-ops for TensorRT, and ONNX Runtime 1.32's Cast elimination mis-rewires such
    chains ("... is not a graph input, initializer, or output of a previous node").
    """
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):  # fmt: skip
        return 0  # rewiring names across subgraph scopes is not worth it here
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    types.update({t.name: t.data_type for t in graph.initializer})
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if (
            node.op_type == "Cast"
            and node.domain in ("", "ai.onnx")
            and node.output[0] not in outputs
        ):
            to = next(a.i for a in node.attribute if a.name == "to")
            if types.get(node.input[0]) == to:
                rename[node.output[0]] = node.input[0]
                continue
        keep.append(node)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
        kept_names = {o for n in keep for o in n.output}
        stale = [v for v in graph.value_info if v.name in rename and v.name not in kept_names]
        for v in stale:
            graph.value_info.remove(v)
    return removed


def _set_io(model: onnx.ModelProto, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """Write the specs' shapes into the graph's inputs/outputs (the exporter leaves some sizes
    symbolic, e.g. ``answer_ids``'s second dim) and check names and element types."""
    sides = ((model.graph.input, inputs, "input"), (model.graph.output, outputs, "output"))
    for values, specs, kind in sides:
        got = [v.name for v in values]
        want = [s.name for s in specs]
        if got != want:
            raise RuntimeError(f"exported graph {kind}s are {got}, expected {want}")
        for v, s in zip(values, specs, strict=True):
            tt = v.type.tensor_type
            if tt.elem_type != _ONNX_TYPES[s.dtype]:
                raise RuntimeError(
                    f"exported {kind} {s.name!r} has ONNX type "
                    f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, expected {s.dtype}"
                )
            tt.shape.Clear()
            for size in s.shape:
                dim = tt.shape.dim.add()
                if isinstance(size, str):
                    dim.dim_param = size
                else:
                    dim.dim_value = size


def _export_graph(
    model: CoTokVQA,
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    *,
    graph: str,
    variant: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    batch: int | None,
    opset: int,
    target: Target,
    expected_plugin_nodes: int = 0,
) -> GraphSpec:
    plugin = variant == "plugin"
    axes = None
    if batch is None:
        axes = {s.name: {0: BATCH_DIM} for s in (*inputs, *outputs)}
    buf = io.BytesIO()
    plugin_ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if plugin:
        from cotok_edge.kernels.onnx_plugin import export_tokenlearner_as_plugin

        plugin_ctx = export_tokenlearner_as_plugin()
    with warnings.catch_warnings(record=True) as caught, eval_no_grad(model), plugin_ctx:
        warnings.simplefilter("always")
        torch.onnx.export(
            module.eval(),
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    # The exporter's own deprecation notices say nothing about this graph; tracer
    # warnings do (a Python branch on a traced value), so they go into the spec.
    notes = sorted(
        {
            str(w.message).splitlines()[0]
            for w in caught
            if not issubclass(w.category, DeprecationWarning | FutureWarning)
        }
    )
    proto = onnx.load_from_string(buf.getvalue())
    remove_noop_casts(proto)
    _set_io(proto, inputs, outputs)
    proto.graph.name = f"cotok_{graph}_{variant}"
    props = {
        "cotok.format": SPEC_FORMAT,
        "cotok.graph": graph,
        "cotok.variant": variant,
        "cotok.batch": "dynamic" if batch is None else str(batch),
        "cotok.model_config": model.config.to_json(),
    }
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    report = check_model(proto, target, allow_plugins=plugin, graph_name=path.name)
    if report.plugin_nodes != expected_plugin_nodes:
        raise RuntimeError(
            f"{path.name}: expected {expected_plugin_nodes} {PLUGIN_ONNX_DOMAIN}::{PLUGIN_NAME} "
            f"nodes (one per softmax-pooled stream per step), found {report.plugin_nodes}"
        )
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    return GraphSpec(
        graph=graph,
        variant=variant,
        path=path,
        opset=opset,
        batch="dynamic" if batch is None else batch,
        inputs=inputs,
        outputs=outputs,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        checks=report.to_dict(),
        plugin_nodes=report.plugin_nodes,
        export_warnings=notes,
    )


def export_video_encoder(
    model: CoTokVQA,
    path: str | Path,
    *,
    target: str | Target = "cpu",
    batch: int | None = None,
    opset: int | None = None,
) -> GraphSpec:
    """Export and check ``video_encoder`` (uint8 streams -> ``v_<stream> [B, N_s, d]``).

    ``batch=None`` exports a dynamic batch; an int fixes it. ``opset`` defaults to
    the target's.
    """
    t = get_target(target)
    inputs, outputs = graph_io(model, VIDEO_ENCODER, batch=batch)
    ex = trace_inputs(model, batch or _TRACE_BATCH)
    args = tuple(ex[s] for s in model.stream_names)
    return _export_graph(
        model, VideoEncoderGraph(model), args, Path(path), graph=VIDEO_ENCODER, variant="plain",
        inputs=inputs, outputs=outputs, batch=batch, opset=opset or t.onnx_opset, target=t,
    )  # fmt: skip


def export_question_decoder(
    model: CoTokVQA,
    path: str | Path,
    *,
    variant: str = "plain",
    target: str | Target = "cpu",
    batch: int | None = None,
    opset: int | None = None,
    logits: bool = True,
) -> GraphSpec:
    """Export and check ``question_decoder`` in one variant (``plain``, ``plugin``, ``explain``).

    Inputs ``v_<stream> [B, N_s, d]``, ``question_ids [B, L]`` int64, ``question_mask
    [B, L]`` bool; outputs ``answer_ids [B, A]``, ``answer_scores [B]``, ``answer_logits
    [B, A, V]`` (unless ``logits=False``) and, for ``explain``, ``maps_<stream> [B, K, S, N_s]``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    t = get_target(target)
    maps = variant == "explain"
    inputs, outputs = graph_io(model, QUESTION_DECODER, batch=batch, logits=logits, maps=maps)
    ex = trace_inputs(model, batch or _TRACE_BATCH)
    with eval_no_grad(model):
        video = model.encode_video({s: ex[s] for s in model.stream_names})
    args = (*(video[s] for s in model.stream_names), ex["question_ids"], ex["question_mask"])
    expected = 0
    if variant == "plugin":
        if model.config.video_tokenizer != "tokenlearner":
            raise ValueError("the plugin variant needs TokenLearners; this config has none")
        # The plugin fuses the softmax TokenLearner; a max-pooling stream stays plain ops.
        softmax = [st for st in model.config.streams if st.token_pool == "softmax"]
        expected = len(softmax) * model.config.steps
    return _export_graph(
        model, QuestionDecoderGraph(model, logits=logits, maps=maps), args, Path(path),
        graph=QUESTION_DECODER, variant=variant, inputs=inputs, outputs=outputs, batch=batch,
        opset=opset or t.onnx_opset, target=t, expected_plugin_nodes=expected,
    )  # fmt: skip


def export_model(
    model: CoTokVQA,
    out_dir: str | Path,
    *,
    target: str | Target = "cpu",
    plugin: bool = False,
    explain: bool = False,
    batch: int | None = None,
    opset: int | None = None,
    logits: bool = True,
) -> dict[str, Any]:
    """Export every graph a bundle needs into ``out_dir``; return the manifest's ONNX spec.

    Always ``video_encoder.onnx`` and ``question_decoder.onnx`` (plain: ONNX Runtime
    runs it, and it is the parity reference); ``question_decoder_plugin.onnx`` with
    ``plugin``; ``question_decoder_explain.onnx`` with ``explain``. Each file is
    checked for ``target`` before it is (atomically) written.
    """
    t = get_target(target)
    if plugin and not t.tensorrt:
        raise ValueError(
            f"target {t.name!r} has no TensorRT: the plugin variant is of no use there"
        )
    out = Path(out_dir)
    graphs: dict[str, GraphSpec] = {}
    graphs[VIDEO_ENCODER] = export_video_encoder(
        model, out / FILES[VIDEO_ENCODER, "plain"], target=t, batch=batch, opset=opset
    )
    variants = ["plain"] + (["plugin"] if plugin else []) + (["explain"] if explain else [])
    for v in variants:
        key = QUESTION_DECODER if v == "plain" else f"{QUESTION_DECODER}_{v}"
        graphs[key] = export_question_decoder(
            model, out / FILES[QUESTION_DECODER, v], variant=v, target=t, batch=batch,
            opset=opset, logits=logits,
        )  # fmt: skip
    text = model.config.text
    batch_spec: dict[str, Any] = (
        {"mode": "dynamic", "dim": BATCH_DIM, "profile": {"min": 1, "opt": 1, "max": t.max_batch}}
        if batch is None
        else {"mode": "fixed", "size": batch}
    )
    return {
        "format": SPEC_FORMAT,
        "target": t.name,
        "opset": opset or t.onnx_opset,
        "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
        "onnx": onnx.__version__,
        "batch": batch_spec,
        "streams": {s: list(model.stream_shape(s)) for s in model.stream_names},
        "question_tokens": text.max_question_tokens,
        "answer_tokens": text.max_answer_tokens,
        "tokens": {"pad_id": text.pad_id, "bos_id": text.bos_id, "eos_id": text.eos_id},
        "decoding": "greedy, unrolled in the graph for answer_tokens steps; PAD after EOS",
        "answer_scores": "mean log-probability of the answer tokens up to and including EOS",
        "graphs": {k: g.to_dict() for k, g in graphs.items()},
    }


def read_spec_metadata(path: str | Path) -> dict[str, str]:
    """The ``cotok.*`` metadata an exported graph carries (graph, variant, batch, config)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("cotok.")}


def model_config_of(path: str | Path) -> dict[str, Any]:
    """The model config JSON stored in an exported graph's metadata."""
    return json.loads(read_spec_metadata(path)["cotok.model_config"])
