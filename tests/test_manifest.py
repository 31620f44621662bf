"""The typed bundle manifest (``cotok_edge.manifest``) and the shared names (``.contract``).

Pure Python: no bundle is exported here; ``tests/test_runtime.py`` loads real ones.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from cotok_edge import contract
from cotok_edge.bundle import read_manifest, write_manifest
from cotok_edge.manifest import (
    BUNDLE_FORMAT,
    BundleError,
    EngineInfo,
    Manifest,
    ManifestError,
    PluginInfo,
)

REPO = Path(__file__).resolve().parent.parent


def _stream(name: str, frames: int, size: int) -> dict:
    return {"name": name, "frames": frames, "size": size, "stem_stride": 2,
            "temporal_strides": [1], "spatial_strides": [2]}  # fmt: skip


def minimal_json(**changes) -> dict:
    """A manifest as the dev bundle writes it (format 2), with ``changes`` applied."""
    graphs = {g: {"file": f"{g}.onnx"} for g in ("video_encoder", "question_decoder")}
    data = {
        "format": BUNDLE_FORMAT,
        "target": "cpu",
        "precision": "fp32",
        "model_config": {"streams": [_stream("s1", 32, 64), _stream("s2", 16, 112)], "text": {}},
        "onnx": {
            "graphs": graphs,
            "question_tokens": 16,
            "tokens": {"pad_id": 0, "bos_id": 1, "eos_id": 2},
            "batch": {"mode": "dynamic", "dim": "B", "profile": {"min": 1, "opt": 1, "max": 8}},
        },
        "files": {},
    }
    data.update(changes)
    return data


def test_round_trip_and_what_the_runtime_reads():
    m = Manifest.from_json(minimal_json())
    assert Manifest.from_json(m.to_json()) == m
    assert m.stream_specs == [("s1", 32, 64), ("s2", 16, 112)]
    assert m.stream_names == ["s1", "s2"]
    assert (m.question_tokens, m.pad_id, m.eos_id) == (16, 0, 2)
    assert (m.fixed_batch, m.max_batch) == (None, 8)
    assert m.graph_file("video_encoder") == "video_encoder.onnx"
    assert m.graph_file("question_decoder_explain") is None
    fixed = Manifest.from_json(minimal_json(onnx={**m.onnx, "batch": {"mode": "fixed", "size": 4}}))
    assert (fixed.fixed_batch, fixed.max_batch) == (4, 4)


def test_format_1_is_upgraded_on_reading():
    engine = {"file": "model.engine", "tensorrt": "10.3.0", "compute_capability": [8, 7]}
    m = Manifest.from_json(minimal_json(format="cotok-bundle/1", plugin=True, engine=engine))
    assert m.format == BUNDLE_FORMAT
    assert m.plugin == PluginInfo()
    assert m.plugin.library == contract.PLUGIN_LIBRARY
    assert m.engine == EngineInfo({"engine": "model.engine"}, "10.3.0", (8, 7))
    assert Manifest.from_json(minimal_json(format="cotok-bundle/1", plugin=False)).plugin is None
    written = m.to_json()
    assert written["format"] == "cotok-bundle/2"
    assert written["plugin"]["name"] == "CoTokTokenLearner"
    assert written["engine"]["files"] == {"engine": "model.engine"}


def test_an_unknown_format_is_refused_in_one_line_naming_the_rebuild_command():
    with pytest.raises(BundleError) as e:
        Manifest.from_json(minimal_json(format="cotok-bundle/99", target="jetson-orin"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "cotok-bundle/99" in msg
    assert "python -m cotok_edge.build --target jetson-orin --precision fp32 --force" in msg


def _drop(data: dict, dotted: str) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node[p]
    del node[last]
    return data


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (_drop(minimal_json(), "precision"), "field 'precision' is missing"),
        (_drop(minimal_json(), "files"), "field 'files' is missing"),
        (minimal_json(precision="int9"), "field 'precision' is 'int9', not one of"),
        (minimal_json(target=7), "field 'target' must be text, got int"),
        (_set(minimal_json(), "model_config.streams", []), "'model_config.streams' is empty"),
        (_drop(minimal_json(), "model_config.streams"), "model_config: field 'streams' is missing"),
        (_drop(minimal_json(), "onnx.graphs.question_decoder"),
         "onnx.graphs: field 'question_decoder' is missing"),
        (_set(minimal_json(), "onnx.question_tokens", "16"),
         "onnx: field 'question_tokens' must be an integer, got str"),
        (_set(minimal_json(), "onnx.tokens", {"pad_id": 0}),
         "onnx.tokens: field 'eos_id' is missing"),
        (_set(minimal_json(), "onnx.batch", {"mode": "static"}), "'onnx.batch.mode' is 'static'"),
        (minimal_json(engine={"tensorrt": "10.3"}), "engine: field 'files' is missing"),
        (minimal_json(engine={"files": {"g": "g.engine"}, "tensorrt": "10.3",
                              "compute_capability": [8]}),
         "field 'compute_capability' must be [major, minor]"),
        (minimal_json(plugin={"name": "X"}), "plugin: field 'version' is missing"),
        (minimal_json(dla="yes"), "field 'dla' must be a bool"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(ManifestError) as e:
        Manifest.from_json(data, where="bundle b: manifest.json")
    msg = str(e.value)
    assert message in msg, msg
    assert msg.startswith("bundle b: manifest.json") and "\n" not in msg


def test_write_then_read_a_folder(tmp_path):
    (tmp_path / "video_encoder.onnx").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_text("y")
    m = write_manifest(tmp_path, Manifest.from_json(minimal_json()))
    assert set(m.files) == {"video_encoder.onnx", "sub/f.txt"}
    assert read_manifest(tmp_path) == m
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest")] == []
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert next(iter(on_disk)) == "format" and on_disk["format"] == BUNDLE_FORMAT


def test_every_manifest_field_is_documented():
    doc = Manifest.__doc__ or ""
    for name in Manifest.__dataclass_fields__:
        assert re.search(rf"\b{name}\b", doc), f"Manifest.{name} is not in the docstring"


def test_the_cpp_plugin_header_says_what_the_contract_says():
    header = (REPO / "kernels" / "csrc" / "tokenlearner_plugin.h").read_text()
    consts = dict(re.findall(r'constexpr char const\* (k\w+) = "([^"]*)";', header))
    assert consts == {
        "kPluginName": contract.PLUGIN_NAME,
        "kPluginVersion": contract.PLUGIN_VERSION,
        "kPluginNamespace": contract.PLUGIN_NAMESPACE,
    }
    cmake = (REPO / "kernels" / "CMakeLists.txt").read_text()
    stem = contract.PLUGIN_LIBRARY_FILE.removeprefix("lib").removesuffix(".so")
    assert f"add_library({stem} SHARED" in cmake


def test_graph_and_tensor_names():
    assert contract.onnx_file(contract.QUESTION_DECODER_PLUGIN) == "question_decoder_plugin.onnx"
    assert contract.engine_file(contract.VIDEO_ENCODER) == "video_encoder.engine"
    assert contract.feature_name("s2") == "v_s2" and contract.is_feature_name("v_s2")
    assert contract.maps_name("s3") == "maps_s3"
    with pytest.raises(ValueError, match="graph: unknown 'decoder'"):
        contract.onnx_file("decoder")
