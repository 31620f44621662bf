"""TensorRT engines from the exported ONNX graphs: a thin, version-aware builder.

Part of the TensorRT backend's home (:mod:`cotok_edge.runtime.backends.tensorrt`).
Torch-free: the on-device finish builds a bundle's engines with it from what the
manifest records (:func:`build_bundle_engines`); only :func:`graph_precision` and
:func:`graph_inputs`, which inspect an ONNX file, import ``onnx``.

Everything that decides *how* to build is a pure function of the TensorRT version
string, the target and the graph (:func:`plan_build`), so it is tested without
TensorRT; :func:`build_engine` only carries a plan out with the ``tensorrt`` Python
API, imported lazily. :func:`trtexec_argv` gives the equivalent ``trtexec`` command,
which is what a bundle prints for the device when it is built on another host.

Versions (TensorRT Python API as documented for 10.x and in the 10.x -> 11.x
migration guide):

- 10.3 (JetPack 6.1/6.2): weakly typed networks. FP16 via ``BuilderFlag.FP16``; INT8
  only with explicit quantization (the graph's Q/DQ nodes from QAT; no calibrator),
  with ``INT8`` and ``FP16`` set so the layers between Q/DQ pairs may run in FP16.
  ``create_network(0)``: explicit batch is the only mode since 10.0 (the
  ``EXPLICIT_BATCH`` flag is deprecated and ignored).
- 11.x: strongly typed only. The FP16/INT8/FP8/BF16 builder flags (and trtexec's
  ``--fp16``/``--int8``) are removed; each tensor keeps the type the ONNX gives it, so
  the requested precision must be the graph's own (Q/DQ for INT8, an FP16 graph from
  ModelOpt AutoCast for FP16). ``create_network(0)`` is strongly typed by default.
- FP32 builds clear ``TF32`` (set by default) so FP32 engines meet the FP32 parity bar.
- DLA (Orin NX/AGX, 10.x): ``default_device_type = DLA``, ``DLA_core``, and
  ``GPU_FALLBACK`` so layers DLA cannot run go to the GPU.
- The plugin library (``libcotok_tokenlearner_plugin.so``, IPluginV3 creators exported
  through ``getCreators``) is loaded with ``IPluginRegistry.load_library``; a plain
  ``ctypes.CDLL`` does not register V3 creators.

The engine file is exactly what ``build_serialized_network`` returned, so ``trtexec
--loadEngine=...`` reads it; what we know about it goes to a sidecar JSON next to it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cotok_edge.bundle import atomic_write_bytes
from cotok_edge.bundle import sha256_of as sha256_file
from cotok_edge.contract import (
    QUESTION_DECODER,
    QUESTION_DECODER_PLUGIN,
    VIDEO_ENCODER,
    engine_file,
    onnx_file,
)
from cotok_edge.export.targets import Target, get_target, validate
from cotok_edge.manifest import EngineInfo, Manifest

from . import (
    check_gpu,
    gpu_info,
    import_tensorrt,
    is_strongly_typed,
    load_plugin_library,
    version_matches,
)

SIDECAR_FORMAT = "cotok-engine/1"
JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
MiB = 1 << 20


def graph_precision(model: Any) -> str:
    """Precision an ONNX graph carries by itself: ``int8``/``fp8`` (Q/DQ), ``fp16`` or ``fp32``.

    ``model`` is an ``onnx.ModelProto`` or a path.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    inits = {t.name: t.data_type for t in model.graph.initializer}
    fp8 = {
        getattr(onnx.TensorProto, n)
        for n in ("FLOAT8E4M3FN", "FLOAT8E5M2")
        if hasattr(onnx.TensorProto, n)
    }
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq:
        zp_types = {inits.get(n.input[2]) for n in qdq if len(n.input) > 2 and n.input[2]}
        return "fp8" if zp_types & fp8 else "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if fp16 in inits.values() or any(
        v.type.tensor_type.elem_type == fp16 for v in (*model.graph.input, *model.graph.output)
    ):
        return "fp16"
    return "fp32"


def graph_inputs(model: Any) -> list[dict[str, Any]]:
    """``[{"name", "shape"}]`` of a graph's inputs; symbolic dims become their names (``"B"``)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    out = []
    for v in model.graph.input:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        out.append({"name": v.name, "shape": dims})
    return out


@dataclass
class BuildPlan:
    """Everything one engine build sets, decided without TensorRT (see :func:`plan_build`).

    builder_flags / cleared_flags: names of ``trt.BuilderFlag`` members.
    profiles: ``{input: (min, opt, max)}`` shapes for inputs with a dynamic batch.
    """

    tensorrt: str
    target: str
    precision: str
    strongly_typed: bool
    builder_flags: list[str]
    cleared_flags: list[str]
    workspace_bytes: int
    dla_core: int | None = None
    gpu_fallback: bool = False
    plugin_library: str | None = None
    timing_cache: str | None = None
    profiles: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = {k: [list(s) for s in v] for k, v in self.profiles.items()}
        return d


def plan_build(
    trt_version: str,
    target: str | Target,
    precision: str,
    *,
    graph_precision: str = "fp32",
    inputs: list[dict[str, Any]] | None = None,
    dla: bool = False,
    plugin_library: str | Path | None = None,
    timing_cache: str | Path | None = None,
    max_batch: int | None = None,
    workspace_bytes: int | None = None,
) -> BuildPlan:
    """Decide the build for TensorRT ``trt_version`` (e.g. ``trt.__version__``).

    Args:
        graph_precision: what the ONNX carries (:func:`graph_precision`).
        inputs: the graph's inputs (:func:`graph_inputs`); a ``"B"`` dim gets an
            optimisation profile 1 / 1 / ``max_batch`` (default: the target's).

    Raises ``ValueError`` for a choice that cannot build: a TensorRT version the
    target does not run, INT8 without Q/DQ, a precision a strongly typed (11.x)
    network cannot take from this graph, DLA where there is none.
    """
    t = validate(target, precision, dla=dla, plugin=plugin_library is not None)
    if not t.tensorrt:
        raise ValueError(f"target {t.name!r} does not use TensorRT")
    if not any(version_matches(trt_version, w) for w in t.tensorrt):
        raise ValueError(
            f"TensorRT {trt_version} is not a version target {t.name!r} runs "
            f"({', '.join(t.tensorrt)}); engines must be built with the device's own TensorRT"
        )
    strong = is_strongly_typed(trt_version)
    flags: list[str] = []
    cleared: list[str] = []
    if precision in ("int8", "fp8") and graph_precision != precision:
        raise ValueError(
            f"precision {precision!r} needs a graph with explicit {precision.upper()} Q/DQ nodes "
            f"(from QAT); this graph is {graph_precision}"
        )
    if strong:
        if graph_precision != precision:
            raise ValueError(
                f"TensorRT {trt_version} builds strongly typed networks only: precision comes "
                f"from the ONNX, and this graph is {graph_precision}, not {precision}. Export "
                "INT8 Q/DQ (QAT) or convert to FP16 with ModelOpt AutoCast first"
            )
        if dla:
            raise ValueError(f"DLA builds need TensorRT 10.x (JetPack); got {trt_version}")
    else:
        if graph_precision not in ("fp32", precision):
            raise ValueError(
                f"the graph is {graph_precision} but precision {precision!r} was asked for"
            )
        if precision == "fp16":
            flags.append("FP16")
        elif precision == "int8":
            flags += ["INT8", "FP16"]
    if precision == "fp32":
        cleared.append("TF32")
    dla_core = None
    if dla:
        dla_core = 0
        flags.append("GPU_FALLBACK")
    profiles: dict[str, tuple[list[int], list[int], list[int]]] = {}
    top = max_batch or t.max_batch
    for spec in inputs or []:
        shape = list(spec["shape"])
        if any(isinstance(d, str) or d == 0 for d in shape):
            if not isinstance(shape[0], str) or any(isinstance(d, str) for d in shape[1:]):
                raise ValueError(
                    f"input {spec['name']!r} has shape {shape}: only a dynamic batch (first dim) "
                    "gets an optimisation profile"
                )
            rest = [int(d) for d in shape[1:]]
            profiles[spec["name"]] = ([1, *rest], [1, *rest], [top, *rest])
    return BuildPlan(
        tensorrt=trt_version,
        target=t.name,
        precision=precision,
        strongly_typed=strong,
        builder_flags=flags,
        cleared_flags=cleared,
        workspace_bytes=workspace_bytes if workspace_bytes is not None else t.workspace_bytes,
        dla_core=dla_core,
        gpu_fallback=dla,
        plugin_library=str(plugin_library) if plugin_library is not None else None,
        timing_cache=str(timing_cache) if timing_cache is not None else None,
        profiles=profiles,
    )


def _shapes_arg(flag: str, profiles: dict[str, tuple[list[int], ...]], which: int) -> str:
    parts = [
        f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in profiles.items()
    ]
    return f"--{flag}={','.join(parts)}"


def trtexec_argv(
    onnx_path: str | Path,
    engine_path: str | Path,
    plan: BuildPlan,
    *,
    trtexec: str | None = None,
    skip_inference: bool = False,
) -> list[str]:
    """The ``trtexec`` command line that builds the same engine as :func:`build_engine`.

    ``trtexec`` defaults to JetPack's ``/usr/src/tensorrt/bin/trtexec`` on Jetson
    targets (it is not on ``PATH`` there) and to ``trtexec`` elsewhere.
    """
    exe = trtexec or (JETSON_TRTEXEC if get_target(plan.target).is_jetson else "trtexec")
    argv = [exe, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    # Base-2 suffix explicit, so the value does not depend on trtexec's default unit.
    argv.append(f"--memPoolSize=workspace:{max(1, plan.workspace_bytes // MiB)}M")
    flag_args = {"FP16": "--fp16", "INT8": "--int8"}
    argv += [flag_args[f] for f in plan.builder_flags if f in flag_args]
    if "TF32" in plan.cleared_flags:
        argv.append("--noTF32")
    if plan.dla_core is not None:
        argv.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            argv.append("--allowGPUFallback")
    if plan.plugin_library:
        argv.append(f"--dynamicPlugins={plan.plugin_library}")
    if plan.timing_cache:
        argv.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.profiles:
        for i, flag in enumerate(("minShapes", "optShapes", "maxShapes")):
            argv.append(_shapes_arg(flag, plan.profiles, i))
    if skip_inference:
        argv.append("--skipInference")
    return argv


def polygraphy_argv(onnx_path: str | Path, plan: BuildPlan) -> list[str]:
    """Polygraphy's comparison of TensorRT with ONNX Runtime on one graph, every tensor's
    output marked so the first layer that differs is named (``pip install polygraphy``;
    pure Python). Same precision flags, plugin library and (opt) shapes as ``plan``.

    ONNX Runtime cannot run the plugin graph's custom nodes: compare the plain graphs.
    """
    argv = ["polygraphy", "run", str(onnx_path), "--trt", "--onnxrt"]
    flag_args = {"FP16": "--fp16", "INT8": "--int8"}
    argv += [flag_args[f] for f in plan.builder_flags if f in flag_args]
    if plan.plugin_library:
        argv += ["--plugins", plan.plugin_library]
    if plan.profiles:
        argv.append("--input-shapes")
        for name, (_, opt, _) in plan.profiles.items():
            argv.append(f"{name}:[{','.join(str(d) for d in opt)}]")
    argv += ["--trt-outputs", "mark", "all", "--onnx-outputs", "mark", "all"]
    return [*argv, "--atol", "1e-3", "--rtol", "1e-3"]


def trtexec_command(argv: list[str]) -> str:
    """One shell-quoted line for ``argv`` (what the bundle prints)."""
    return shlex.join(argv)


def sidecar_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def engine_metadata(
    plan: BuildPlan,
    *,
    onnx_path: str | Path,
    engine_path: str | Path,
    gpu: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar's content: TensorRT version, GPU, precision, target, hashes, build plan."""
    meta = {
        "format": SIDECAR_FORMAT,
        "engine": Path(engine_path).name,
        "engine_sha256": sha256_file(engine_path) if Path(engine_path).exists() else None,
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha256_file(onnx_path),
        "tensorrt": plan.tensorrt,
        "gpu": gpu,
        "precision": plan.precision,
        "target": plan.target,
        "strongly_typed": plan.strongly_typed,
        "plan": plan.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        meta.update(extra)
    return meta


def write_sidecar(engine_path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``<engine>.json`` atomically; the engine file itself is left untouched."""
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(sidecar_path(engine_path), text.encode())


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    return json.loads(sidecar_path(engine_path).read_text())


def check_engine_matches(engine_path: str | Path, onnx_path: str | Path) -> None:
    """Raise ``ValueError`` if the engine's sidecar or hashes do not match these files."""
    meta = read_sidecar(engine_path)
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{sidecar_path(engine_path)}: not a {SIDECAR_FORMAT} sidecar")
    if meta.get("engine_sha256") != sha256_file(engine_path):
        raise ValueError(f"{engine_path}: engine bytes differ from its sidecar's sha256")
    if meta.get("onnx_sha256") != sha256_file(onnx_path):
        raise ValueError(f"{engine_path}: built from another ONNX than {onnx_path}")


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    target: str | Target,
    precision: str,
    dla: bool = False,
    plugin_library: str | Path | None = None,
    timing_cache: str | Path | None = None,
    max_batch: int | None = None,
    verbose: bool = False,
    onnx_precision: str | None = None,
    inputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path`` with the local TensorRT; return the sidecar.

    ``onnx_precision`` / ``inputs``: what the graph carries and takes, as
    :func:`plan_build` wants them; None reads them from the ONNX file (imports onnx).
    Needs the ``tensorrt`` package and a GPU of the target (raises
    :class:`TensorRTUnavailable` / ``ValueError`` otherwise). Writes the engine and
    the timing cache atomically, then ``<engine>.json``.
    """
    trt = import_tensorrt()
    gpu = gpu_info()
    check_gpu(target, gpu)
    plan = plan_build(
        trt.__version__, target, precision,
        graph_precision=onnx_precision or graph_precision(onnx_path),
        inputs=inputs if inputs is not None else graph_inputs(onnx_path), dla=dla,
        plugin_library=plugin_library, timing_cache=timing_cache, max_batch=max_batch,
    )  # fmt: skip
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    if plan.plugin_library:
        load_plugin_library(trt, plan.plugin_library, logger)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n" + "\n".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in plan.profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(plan.timing_cache) if plan.timing_cache else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.exists() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    data = bytes(memoryview(serialized))
    atomic_write_bytes(engine_path, data)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    meta = engine_metadata(
        plan, onnx_path=onnx_path, engine_path=engine_path, gpu=gpu,
        extra={"engine_bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest()},
    )  # fmt: skip
    write_sidecar(engine_path, meta)
    return meta


def bundle_graph_precision(precision: str) -> str:
    """What a bundle's graphs carry for its ``precision``: INT8 graphs have Q/DQ (QAT);
    FP16 bundles ship FP32 graphs (TensorRT 10.x builds FP16 from them with a flag)."""
    return precision if precision in ("int8", "fp8") else "fp32"


def bundle_engine_plans(
    manifest: Manifest, trt_version: str, plugin_library: str | None
) -> dict[str, tuple[str, BuildPlan]]:
    """``{graph: (ONNX file, plan)}`` for the bundle's two engines, from its manifest alone.

    With ``plugin_library`` the question decoder is built from the plugin graph.
    """
    out = {}
    for graph in (VIDEO_ENCODER, QUESTION_DECODER):
        source, lib = onnx_file(graph), None
        if graph == QUESTION_DECODER and plugin_library is not None:
            source, lib = onnx_file(QUESTION_DECODER_PLUGIN), plugin_library
        plan = plan_build(
            trt_version, manifest.target, manifest.precision,
            graph_precision=bundle_graph_precision(manifest.precision),
            inputs=manifest.graph(graph)["inputs"], dla=manifest.dla, plugin_library=lib,
            timing_cache="timing.cache",
        )  # fmt: skip
        out[graph] = (source, plan)
    return out


def build_bundle_engines(
    bundle: str | Path,
    manifest: Manifest,
    plugin: Path | None,
    log: Any = print,
) -> tuple[EngineInfo, dict[str, Any]]:
    """Build both engines of ``bundle`` here (from its ONNX graphs; the plugin graph for the
    decoder when ``plugin``, the built plugin library, is given).

    Reads the graphs' inputs and precision from the manifest: no onnx, no torch. Returns
    the manifest's ``engine`` entry and ``engine_status``. Raises
    :class:`TensorRTUnavailable` / ``ValueError`` where TensorRT or the target's GPU
    is missing.
    """
    bundle = Path(bundle)
    files, meta = {}, {}
    rel_plugin = None if plugin is None else Path(plugin).relative_to(bundle).as_posix()
    for graph in (VIDEO_ENCODER, QUESTION_DECODER):
        source = onnx_file(graph)
        if graph == QUESTION_DECODER and plugin is not None:
            source = onnx_file(QUESTION_DECODER_PLUGIN)
        log(f"TensorRT: building {engine_file(graph)} from {source}")
        meta[graph] = build_engine(
            bundle / source, bundle / engine_file(graph), target=manifest.target,
            precision=manifest.precision, dla=manifest.dla,
            plugin_library=plugin if graph == QUESTION_DECODER else None,
            timing_cache=bundle / "timing.cache",
            onnx_precision=bundle_graph_precision(manifest.precision),
            inputs=manifest.graph(graph)["inputs"],
        )  # fmt: skip
        files[graph] = engine_file(graph)
    gpu = meta[VIDEO_ENCODER].get("gpu") or {}
    cc = str(gpu.get("compute_capability", "")).split(".")
    entry = EngineInfo(
        files=files,
        tensorrt=str(meta[VIDEO_ENCODER].get("tensorrt")),
        compute_capability=(int(cc[0]), int(cc[1])) if len(cc) == 2 else None,
        gpu=gpu.get("name"),
        plugin_library=rel_plugin,
    )
    return entry, {"built": True}
