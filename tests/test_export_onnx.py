"""ONNX export of the tiny model: both graphs, plugin and explain variants, checks, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[export]')")

from cotok_edge.export import onnx as ex  # noqa: E402
from cotok_edge.export.checks import OnnxCheckError, check_model  # noqa: E402

from cotok_edge import CoTokConfig, CoTokVQA  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> CoTokVQA:
    torch.manual_seed(0)
    return CoTokVQA(CoTokConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def encoder(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "video_encoder.onnx"
    return ex.export_video_encoder(model, path, target="jetson-orin")


@pytest.fixture(scope="module")
def decoder(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("dec") / "question_decoder.onnx"
    return ex.export_question_decoder(model, path, target="jetson-orin")


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_video_encoder_graph_spec_and_checks(model, encoder):
    m = onnx.load(str(encoder.path))
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    assert [i.name for i in m.graph.input] == ["s1", "s2", "s3"]
    assert _dims(m.graph.input[0]) == ["B", 3, 32, 64, 64]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    grids = model.feature_grids
    for out, s in zip(m.graph.output, ("s1", "s2", "s3"), strict=True):
        t, h, w = grids[s]
        assert out.name == f"v_{s}" and _dims(out) == ["B", t * h * w, model.config.dim]
    spec = encoder.to_dict()
    assert (
        spec["batch"] == "dynamic" and spec["opset"] == 17 and spec["file"] == "video_encoder.onnx"
    )
    assert spec["checks"]["tensorrt_tables"] == ["10.3"] and "plugin" not in spec
    # Normalisation is inside the graph: the uint8 input is cast, then scaled.
    assert "Conv" in spec["checks"]["ops"] and "Cast" in spec["checks"]["ops"]


def test_question_decoder_graph_spec_and_checks(model, decoder):
    m = onnx.load(str(decoder.path))
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    t = model.config.text
    names = [i.name for i in m.graph.input]
    assert names == ["v_s1", "v_s2", "v_s3", "question_ids", "question_mask"]
    ids, mask = m.graph.input[3], m.graph.input[4]
    assert _dims(ids) == ["B", t.max_question_tokens] == _dims(mask)
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert mask.type.tensor_type.elem_type == onnx.TensorProto.BOOL
    outs = {o.name: o for o in m.graph.output}
    assert list(outs) == ["answer_ids", "answer_scores", "answer_logits"]
    assert _dims(outs["answer_ids"]) == ["B", t.max_answer_tokens]
    assert outs["answer_ids"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert _dims(outs["answer_scores"]) == ["B"]
    assert _dims(outs["answer_logits"]) == ["B", t.max_answer_tokens, t.vocab_size]
    ops = decoder.checks["ops"]
    # Unrolled: one ArgMax per step, no control flow for TensorRT to run.
    assert ops["ArgMax"] == t.max_answer_tokens
    assert not {"Loop", "If", "Scan"} & set(ops)
    meta = ex.read_spec_metadata(decoder.path)
    assert meta["cotok.graph"] == "question_decoder" and meta["cotok.variant"] == "plain"
    assert ex.model_config_of(decoder.path) == json.loads(model.config.to_json())


def test_plain_graphs_pass_the_desktop_and_cpu_checks_too(encoder, decoder):
    for target in ("desktop", "cpu", "jetson-orin-nano"):
        check_model(encoder.path, target)
        check_model(decoder.path, target)


def test_no_noop_casts_are_left(decoder):
    m = onnx.load(str(decoder.path))
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    types.update({t.name: t.data_type for t in m.graph.initializer})
    for n in m.graph.node:
        if n.op_type == "Cast":
            to = next(a.i for a in n.attribute if a.name == "to")
            assert types.get(n.input[0]) != to, n.name


def test_plugin_variant_has_one_plugin_node_per_stream_per_step(model, tmp_path):
    spec = ex.export_question_decoder(
        model, tmp_path / "question_decoder_plugin.onnx", variant="plugin", target="jetson-orin"
    )
    cfg = model.config
    assert spec.plugin_nodes == len(cfg.streams) * cfg.steps
    d = spec.to_dict()
    assert d["plugin"] == {
        "op": "cotok::CoTokTokenLearner", "version": "2", "namespace": "cotok",
        "nodes": len(cfg.streams) * cfg.steps,
    }  # fmt: skip
    m = onnx.load(str(spec.path))
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    # Same interface as the plain graph, so the runtime swaps one for the other.
    assert [i.name for i in m.graph.input][-2:] == ["question_ids", "question_mask"]
    assert [o.name for o in m.graph.output] == ["answer_ids", "answer_scores", "answer_logits"]
    # The checks refuse the plugin graph where plugins are not allowed.
    with pytest.raises(OnnxCheckError, match="plugin variant"):
        check_model(m, "jetson-orin")


def test_a_max_pooling_stream_stays_plain_ops_in_the_plugin_variant(tmp_path):
    # The plugin implements the softmax TokenLearner only: s3's gated max stays ONNX ops.
    data = CoTokConfig.preset("tiny").to_dict()
    data["streams"][2].update(token_pool="max", token_condition="words")
    torch.manual_seed(0)
    model = CoTokVQA(CoTokConfig.from_dict(data)).eval()
    spec = ex.export_question_decoder(
        model, tmp_path / "question_decoder_plugin.onnx", variant="plugin", target="jetson-orin"
    )
    cfg = model.config
    assert spec.plugin_nodes == 2 * cfg.steps
    m = onnx.load(str(spec.path))
    assert sum(n.op_type == "ReduceMax" for n in m.graph.node) >= cfg.steps
    with pytest.raises(ValueError, match="no TensorRT"):
        ex.export_model(model, tmp_path / "cpu", target="cpu", plugin=True)


def test_explain_variant_outputs_the_maps_of_every_step(model, tmp_path):
    import onnxruntime as ort

    spec = ex.export_question_decoder(
        model, tmp_path / "explain.onnx", variant="explain", target="jetson-orin", logits=False
    )
    cfg = model.config
    names = [o.name for o in spec.outputs]
    assert names == ["answer_ids", "answer_scores", "maps_s1", "maps_s2", "maps_s3"]
    inputs = model.example_inputs(1, question_len=cfg.text.max_question_tokens, seed=3)
    with torch.no_grad():
        video = model.encode_video({s: inputs[s] for s in model.stream_names})
        _, maps = model.joint_memory(
            video, inputs["question_ids"], inputs["question_mask"], return_maps=True
        )
    sess = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
    feeds = {f"v_{s}": v.numpy() for s, v in video.items()}
    feeds |= {k: inputs[k].numpy() for k in ("question_ids", "question_mask")}
    got = dict(zip(names, sess.run(None, feeds), strict=True))
    for s in model.stream_names:
        want = torch.stack([m[s] for m in maps], dim=1).numpy()
        assert got[f"maps_{s}"].shape == (1, cfg.steps, cfg.video_tokens(s), want.shape[-1])
        np.testing.assert_allclose(got[f"maps_{s}"], want, atol=1e-5)
        np.testing.assert_allclose(got[f"maps_{s}"].sum(-1), 1.0, atol=1e-4)


def test_a_failed_check_leaves_no_file(model, tmp_path, monkeypatch):
    path = tmp_path / "video_encoder.onnx"

    def refuse(*args, **kwargs):
        raise OnnxCheckError("video_encoder.onnx", ["refused for the test"])

    monkeypatch.setattr(ex, "check_model", refuse)
    with pytest.raises(OnnxCheckError, match="refused for the test"):
        ex.export_video_encoder(model, path)
    assert list(tmp_path.iterdir()) == []


def test_fixed_batch_export_and_the_export_restores_training_mode(tmp_path):
    torch.manual_seed(1)
    small = CoTokVQA(CoTokConfig.preset("tiny")).train()
    spec = ex.export_video_encoder(small, tmp_path / "enc.onnx", batch=1)
    assert spec.batch == 1 and spec.inputs[0].shape[0] == 1
    m = onnx.load(str(spec.path))
    assert _dims(m.graph.input[0])[0] == 1 and _dims(m.graph.output[0])[0] == 1
    assert all(mod.training for mod in small.modules())


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    from cotok_edge.bundle import atomic_write_bytes, sha256_of

    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]
    assert sha256_of(p) == __import__("hashlib").sha256(b"two").hexdigest()


def test_remove_noop_casts_keeps_real_casts_and_graph_outputs():
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["x"], ["a"], name="noop", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["a"], ["b"], name="real", to=TensorProto.INT64),
        helper.make_node("Cast", ["x"], ["y"], name="out_noop", to=TensorProto.FLOAT),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert ex.remove_noop_casts(m) == 1
    assert [n.name for n in m.graph.node] == ["real", "out_noop"]
    assert list(m.graph.node[0].input) == ["x"]
    onnx.checker.check_model(m, full_check=True)
