"""TensorRT's home: build plans, trtexec command lines, sidecars, checks (no TensorRT needed).

The engine build itself needs TensorRT and a target GPU; those tests skip with the reason.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[export]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cotok_edge.runtime.backends import tensorrt as trt_home  # noqa: E402
from cotok_edge.runtime.backends.tensorrt import (  # noqa: E402
    TensorRTUnavailable,
    check_gpu,
    is_strongly_typed,
    parse_trt_version,
    version_matches,
)
from cotok_edge.runtime.backends.tensorrt import build as trt_export  # noqa: E402
from cotok_edge.runtime.backends.tensorrt.build import (  # noqa: E402
    check_engine_matches,
    engine_metadata,
    graph_inputs,
    graph_precision,
    plan_build,
    read_sidecar,
    sidecar_path,
    trtexec_argv,
    trtexec_command,
    write_sidecar,
)
from cotok_edge.runtime.errors import PluginLibraryError  # noqa: E402

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
ENC_INPUTS = [
    {"name": "s1", "shape": ["B", 3, 32, 64, 64]},
    {"name": "s2", "shape": ["B", 3, 16, 112, 112]},
]


def test_parse_trt_version():
    assert parse_trt_version("10.3.0.30") == (10, 3, 0)
    assert parse_trt_version("11.4") == (11, 4, 0)
    assert parse_trt_version("10.15.1.29+cuda12") == (10, 15, 1)
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_trt_version("ten")


def test_version_matching_and_typing():
    assert version_matches("10.3.0.30", "10.3") and not version_matches("10.4.0", "10.3")
    assert version_matches("10.9.0", "10.x") and version_matches("11.0.0", "11.x")
    assert not version_matches("11.0.0", "10.x")
    assert not is_strongly_typed("10.3.0") and is_strongly_typed("11.0.0")


def test_jetson_10_3_fp16_uses_the_fp16_flag():
    plan = plan_build("10.3.0.30", "jetson-orin", "fp16", inputs=ENC_INPUTS)
    assert plan.builder_flags == ["FP16"] and not plan.strongly_typed
    assert plan.cleared_flags == [] and plan.dla_core is None
    assert plan.workspace_bytes == 512 << 20
    assert plan.profiles["s1"] == ([1, 3, 32, 64, 64], [1, 3, 32, 64, 64], [4, 3, 32, 64, 64])


def test_jetson_10_3_int8_needs_qdq_and_sets_int8_and_fp16():
    with pytest.raises(ValueError, match="explicit INT8 Q/DQ"):
        plan_build("10.3.0", "jetson-orin", "int8", graph_precision="fp32")
    plan = plan_build("10.3.0", "jetson-orin", "int8", graph_precision="int8")
    assert plan.builder_flags == ["INT8", "FP16"]


def test_fp32_clears_tf32():
    assert plan_build("10.3.0", "jetson-orin", "fp32").cleared_flags == ["TF32"]
    assert plan_build("11.0.0", "desktop", "fp32").cleared_flags == ["TF32"]


def test_dla_on_nx_with_gpu_fallback_and_refused_on_nano():
    plan = plan_build("10.3.0", "jetson-orin-nx", "fp16", dla=True)
    assert plan.dla_core == 0 and plan.gpu_fallback and "GPU_FALLBACK" in plan.builder_flags
    assert plan.workspace_bytes == 1024 << 20
    with pytest.raises(ValueError, match="Orin Nano has no DLA"):
        plan_build("10.3.0", "jetson-orin-nano", "fp16", dla=True)


def test_tensorrt_11_is_strongly_typed_with_no_precision_flags():
    plan = plan_build("11.0.0", "desktop", "fp32", graph_precision="fp32")
    assert plan.strongly_typed and plan.builder_flags == []
    plan = plan_build("11.2.0", "desktop", "int8", graph_precision="int8")
    assert plan.builder_flags == []
    with pytest.raises(ValueError, match=r"strongly typed networks only.*graph is fp32, not fp16"):
        plan_build("11.0.0", "desktop", "fp16", graph_precision="fp32")
    assert plan_build("11.0.0", "desktop", "fp16", graph_precision="fp16").builder_flags == []


def test_tensorrt_10_x_on_desktop_keeps_weak_typing():
    plan = plan_build("10.9.0", "desktop", "fp16")
    assert plan.builder_flags == ["FP16"] and plan.workspace_bytes == 4096 << 20


def test_versions_a_target_does_not_run_are_refused():
    with pytest.raises(ValueError, match=r"TensorRT 11.0.0 is not a version target 'jetson-orin'"):
        plan_build("11.0.0", "jetson-orin", "fp32")
    with pytest.raises(ValueError, match="not a version"):
        plan_build("10.5.0", "jetson-orin-agx", "fp16")
    with pytest.raises(ValueError, match="does not use TensorRT"):
        plan_build("10.3.0", "cpu", "fp32")


def test_only_a_dynamic_batch_gets_a_profile():
    with pytest.raises(ValueError, match="only a dynamic batch"):
        plan_build("10.3.0", "jetson-orin", "fp16", inputs=[{"name": "x", "shape": [1, "N"]}])
    plan = plan_build("10.3.0", "jetson-orin", "fp16", inputs=[{"name": "x", "shape": [1, 8]}])
    assert plan.profiles == {}
    plan = plan_build("10.3.0", "desktop", "fp16", inputs=ENC_INPUTS, max_batch=2)
    assert plan.profiles["s2"][2][0] == 2


def test_trtexec_argv_for_jetson_fp16_with_plugin_cache_and_profiles():
    plan = plan_build(
        "10.3.0", "jetson-orin", "fp16", inputs=ENC_INPUTS,
        plugin_library="build/libcotok_tokenlearner_plugin.so", timing_cache="timing.cache",
    )  # fmt: skip
    argv = trtexec_argv("model.onnx", "model.engine", plan)
    assert argv == [
        "/usr/src/tensorrt/bin/trtexec",
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        "--memPoolSize=workspace:512M",
        "--fp16",
        "--dynamicPlugins=build/libcotok_tokenlearner_plugin.so",
        "--timingCacheFile=timing.cache",
        "--minShapes=s1:1x3x32x64x64,s2:1x3x16x112x112",
        "--optShapes=s1:1x3x32x64x64,s2:1x3x16x112x112",
        "--maxShapes=s1:4x3x32x64x64,s2:4x3x16x112x112",
    ]


def test_trtexec_argv_int8_dla_fp32_and_11x():
    plan = plan_build("10.3.0", "jetson-orin-agx", "int8", graph_precision="int8", dla=True)
    argv = trtexec_argv("m.onnx", "m.engine", plan, trtexec="trtexec")
    assert argv[0] == "trtexec" and "--memPoolSize=workspace:2048M" in argv
    assert argv[4:] == ["--int8", "--fp16", "--useDLACore=0", "--allowGPUFallback"]
    plan = plan_build("11.1.0", "desktop", "fp32")
    argv = trtexec_argv("m.onnx", "m.engine", plan, skip_inference=True)
    assert argv[0] == "trtexec" and "--fp16" not in argv and "--int8" not in argv
    assert argv[-2:] == ["--noTF32", "--skipInference"]


def test_trtexec_command_quotes_paths():
    line = trtexec_command(["trtexec", "--onnx=my model.onnx"])
    assert line == "trtexec '--onnx=my model.onnx'"


def _fp32_graph(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graph_precision_and_inputs(tmp_path):
    p = _fp32_graph(tmp_path / "a.onnx")
    assert graph_precision(p) == "fp32"
    assert graph_inputs(p) == [{"name": "x", "shape": ["B", 4]}]
    m = onnx.load(str(p))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float16), "h"))
    assert graph_precision(m) == "fp16"
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    q = helper.make_model(helper.make_graph(nodes, "q", [x], [y], initializer=[scale, zp]))
    assert graph_precision(q) == "int8"


def test_sidecar_is_written_next_to_a_pure_engine(tmp_path):
    onnx_path = _fp32_graph(tmp_path / "question_decoder.onnx")
    engine = tmp_path / "question_decoder.engine"
    engine.write_bytes(b"\x00engine-bytes")
    plan = plan_build("10.3.0.30", "jetson-orin", "fp16", inputs=graph_inputs(onnx_path))
    gpu = {"name": "Orin", "compute_capability": "8.7"}
    meta = engine_metadata(plan, onnx_path=onnx_path, engine_path=engine, gpu=gpu)
    written = write_sidecar(engine, meta)
    assert written == sidecar_path(engine) == tmp_path / "question_decoder.engine.json"
    # The engine keeps its bytes: no header, no metadata, so trtexec --loadEngine reads it.
    assert engine.read_bytes() == b"\x00engine-bytes"
    back = read_sidecar(engine)
    assert back == json.loads(json.dumps(meta))
    assert back["tensorrt"] == "10.3.0.30" and back["precision"] == "fp16"
    assert back["target"] == "jetson-orin" and back["gpu"] == gpu
    assert back["plan"]["builder_flags"] == ["FP16"]
    assert len(back["onnx_sha256"]) == 64 and len(back["engine_sha256"]) == 64
    check_engine_matches(engine, onnx_path)
    engine.write_bytes(b"\x00other")
    with pytest.raises(ValueError, match="differ from its sidecar"):
        check_engine_matches(engine, onnx_path)


def test_check_gpu_refuses_a_gpu_of_another_architecture():
    check_gpu("jetson-orin", {"name": "Orin", "compute_capability": "8.7"})
    check_gpu("desktop", {"name": "H100", "compute_capability": "9.0"})
    with pytest.raises(ValueError, match="not a sm_87 GPU"):
        check_gpu("jetson-orin-nx", {"name": "H100", "compute_capability": "9.0"})
    with pytest.raises(ValueError, match="not a sm_80\\+ GPU"):
        check_gpu("desktop", {"name": "T4", "compute_capability": "7.5"})
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU"):
        check_gpu("desktop", None)


def test_plugin_library_must_exist_and_load(tmp_path):
    with pytest.raises(PluginLibraryError, match=r"missing\.so is missing: build it on this dev"):
        trt_home.load_plugin_library(object(), tmp_path / "missing.so", None)
    (tmp_path / "junk.so").write_bytes(b"not a shared library")
    with pytest.raises(PluginLibraryError, match=r"junk\.so does not load \("):
        trt_home.load_plugin_library(object(), tmp_path / "junk.so", None)


@pytest.mark.skipif(
    HAVE_TRT, reason="TensorRT is installed here; this checks the message without it"
)
def test_build_engine_without_tensorrt_says_what_is_missing(tmp_path):
    onnx_path = _fp32_graph(tmp_path / "a.onnx")
    with pytest.raises(TensorRTUnavailable, match="tensorrt Python package is not installed"):
        trt_export.build_engine(
            onnx_path, tmp_path / "a.engine", target="desktop", precision="fp32"
        )
    assert not (tmp_path / "a.engine").exists()


@pytest.mark.skipif(
    not HAVE_TRT, reason="TensorRT is not installed (JetPack or pip install tensorrt)"
)
def test_build_engine_on_a_tensorrt_machine(tmp_path):
    gpu = trt_home.gpu_info()
    if gpu is None:
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    import tensorrt

    target = "desktop" if gpu["compute_capability"] != "8.7" else "jetson-orin"
    onnx_path = _fp32_graph(tmp_path / "a.onnx")
    meta = trt_export.build_engine(
        onnx_path, tmp_path / "a.engine", target=target, precision="fp32",
        timing_cache=tmp_path / "timing.cache", max_batch=2,
    )  # fmt: skip
    assert meta["tensorrt"] == tensorrt.__version__
    assert (tmp_path / "a.engine").stat().st_size > 0 and (tmp_path / "timing.cache").exists()
    check_engine_matches(tmp_path / "a.engine", onnx_path)
    runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((tmp_path / "a.engine").read_bytes())
    assert engine is not None and engine.num_io_tensors == 2


def _library_reporting(tmp_path, version: int):
    """A real shared library exporting cotokPluginTensorRTVersion() (as the plugin does)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) found")
    src = tmp_path / "v.c"
    src.write_text(f"int cotokPluginTensorRTVersion(void) {{ return {version}; }}\n")
    lib = tmp_path / f"libv{version}.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return lib


class _Registry:
    """What the loader asks of TensorRT after its own checks (TensorRT is not installed)."""

    def __init__(self, version: str):
        self.__version__ = version
        self.loaded: list[str] = []

    def init_libnvinfer_plugins(self, logger, namespace):
        pass

    def get_plugin_registry(self):
        return self

    def load_library(self, path):
        self.loaded.append(path)
        return object()


def test_plugin_library_built_for_another_tensorrt_major_is_refused(tmp_path):
    lib = _library_reporting(tmp_path, 100300)  # headers of TensorRT 10.3.0
    ok = _Registry("10.3.0.30")
    assert trt_home.load_plugin_library(ok, lib) is not None and ok.loaded == [str(lib)]
    other = _Registry("11.1.0")
    with pytest.raises(PluginLibraryError, match=r"compiled against TensorRT 10\.3 headers, this"):
        trt_home.load_plugin_library(other, lib)
    assert other.loaded == []


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_bundle_engines_without_tensorrt_say_what_is_missing(tmp_path):
    from cotok_edge.manifest import Manifest
    from cotok_edge.runtime.backends.tensorrt.build import build_bundle_engines

    graphs = {
        g: {"file": f"{g}.onnx", "inputs": ENC_INPUTS}
        for g in ("video_encoder", "question_decoder")
    }
    manifest = Manifest(
        target="jetson-orin", precision="fp16", model_config={}, onnx={"graphs": graphs},
    )  # fmt: skip
    with pytest.raises(TensorRTUnavailable, match="tensorrt Python package is not installed"):
        build_bundle_engines(tmp_path, manifest, None, log=lambda m: None)
    assert trt_home.gpu_info() is None or "compute_capability" in trt_home.gpu_info()
