"""The bundle manifest (``manifest.json``): a typed, versioned dataclass.

Written by the build (``python -m cotok_edge.build``) and the dev bundle
(:func:`cotok_edge.runtime.devbundle.write_dev_bundle`), read by the runtime and the
on-device finish; :func:`cotok_edge.bundle.read_manifest` / ``write_manifest`` do the
file side (hashes, atomic write). Pure Python: no torch, onnx or TensorRT.

Format versions (the ``format`` field):

- ``cotok-bundle/1``: ``plugin`` a bool; ``engine`` either ``{"file": ...}`` or
  ``{"files": {graph: file}}``. Read, and upgraded on reading.
- ``cotok-bundle/2`` (written now): ``plugin`` the plugin's identity (or null),
  ``engine.files`` always a ``{graph: file}`` table.

Any other format is refused with one line that names the command rebuilding the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .contract import (
    PLUGIN_LIBRARY,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    QUESTION_DECODER,
    VIDEO_ENCODER,
)

__all__ = [
    "BUNDLE_FORMAT",
    "READABLE_FORMATS",
    "BundleError",
    "EngineInfo",
    "Manifest",
    "ManifestError",
    "PluginInfo",
]

BUNDLE_FORMAT = "cotok-bundle/2"
READABLE_FORMATS = ("cotok-bundle/1", BUNDLE_FORMAT)
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


class BundleError(ValueError):
    """A bundle that cannot be used: missing, unreadable, tampered with or of another format."""


class ManifestError(BundleError):
    """A manifest field that is missing or of the wrong kind; the message names the field."""


def _fail(where: str, name: str, problem: str) -> ManifestError:
    return ManifestError(f"{where}: field {name!r} {problem}")


def _get(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[name]``, required, of ``kind``."""
    if name not in data:
        raise _fail(where, name, "is missing")
    return _check(data[name], name, kind, where)


def _opt(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str, default: Any
) -> Any:
    """``data[name]`` of ``kind``, or ``default`` when absent or null."""
    value = data.get(name)
    return default if value is None else _check(value, name, kind, where)


def _check(value: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    bad_bool = isinstance(value, bool) and kind in (int, float)
    if not isinstance(value, kind) or bad_bool:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        want = " or ".join(_JSON_KIND.get(k, k.__name__) for k in kinds)
        raise _fail(where, name, f"must be {want}, got {type(value).__name__} {value!r:.60}")
    return value


_JSON_KIND = {dict: "an object", list: "a list", str: "text", int: "an integer", bool: "a bool"}


@dataclass
class PluginInfo:
    """The fused TokenLearner TensorRT plugin a bundle's plugin graph needs.

    name / version / namespace: the plugin creator's identity, as the ONNX node carries
        it (op_type, ``plugin_version``, ``plugin_namespace``) and the C++ library
        registers it (:mod:`cotok_edge.contract`).
    library: where the built library goes, relative to the bundle
        (``finish_on_device.sh`` builds it from ``plugins/``).
    """

    name: str = PLUGIN_NAME
    version: str = PLUGIN_VERSION
    namespace: str = PLUGIN_NAMESPACE
    library: str = PLUGIN_LIBRARY

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> PluginInfo | None:
        """``null``/``false`` -> None; ``true`` (format 1) -> this project's plugin."""
        if data is None or data is False:
            return None
        if data is True:
            return cls()
        data = _check(data, "plugin", dict, where)
        w = f"{where}: plugin"
        return cls(
            name=_get(data, "name", str, w),
            version=_get(data, "version", str, w),
            namespace=_get(data, "namespace", str, w),
            library=_get(data, "library", str, w),
        )

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class EngineInfo:
    """The TensorRT engines of a bundle, built on (and only valid for) one device.

    files: ``{graph: engine file}`` relative to the bundle (graph: ``video_encoder``,
        ``question_decoder``; a format-1 single ``file`` becomes ``{"engine": file}``).
    tensorrt: the TensorRT version that built them (``"10.3.0.30"``); the runtime needs
        the same major.minor.patch.
    compute_capability: ``(major, minor)`` of the GPU they were built for (``(8, 7)``).
    gpu: that GPU's name, for reports.
    plugin_library: the plugin library the engines need (relative path), or None.
    """

    files: dict[str, str]
    tensorrt: str
    compute_capability: tuple[int, int] | None = None
    gpu: str | None = None
    plugin_library: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> EngineInfo | None:
        if data is None:
            return None
        w = f"{where}: engine"
        data = _check(data, "engine", dict, where)
        if isinstance(data.get("files"), Mapping):
            files = {str(k): _check(v, f"files.{k}", str, w) for k, v in data["files"].items()}
        elif "file" in data:
            files = {"engine": _get(data, "file", str, w)}
        else:
            raise _fail(w, "files", "is missing (a {graph: engine file} object)")
        if not files:
            raise _fail(w, "files", "is empty")
        cc = data.get("compute_capability")
        if cc is not None:
            cc = _check(cc, "compute_capability", list, w)
            if len(cc) != 2 or not all(isinstance(x, int) for x in cc):
                raise _fail(w, "compute_capability", f"must be [major, minor], got {cc!r}")
            cc = (int(cc[0]), int(cc[1]))
        return cls(
            files=files,
            tensorrt=str(_get(data, "tensorrt", (str, int, float), w)),
            compute_capability=cc,
            gpu=_opt(data, "gpu", str, w, None),
            plugin_library=_opt(data, "plugin_library", str, w, None),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "tensorrt": self.tensorrt,
            "compute_capability": None
            if self.compute_capability is None
            else list(self.compute_capability),
            "gpu": self.gpu,
            "plugin_library": self.plugin_library,
        }

    def describe(self) -> str:
        """The engine files, for messages (``video_encoder.engine, question_decoder.engine``)."""
        return ", ".join(self.files.values())


@dataclass
class Manifest:
    """What a bundle is: written by the build as ``manifest.json``, checked on load.

    Fields (JSON names; those with defaults may be absent or null in the file):

    format: ``cotok-bundle/N``; :data:`BUNDLE_FORMAT` is written, :data:`READABLE_FORMATS`
        are read.
    target: the build target (``jetson-orin``, ``desktop``, ``cpu``... see
        ``cotok_edge.export.targets``).
    precision: ``int8`` | ``fp16`` | ``fp32`` | ``fp8``.
    model_config: the model's ``CoTokConfig.to_dict()``; the runtime reads its
        ``streams`` (``name``, ``frames``, ``size`` and the backbone strides: the
        sampling geometry and feature grids) and ``text``.
    onnx: the ONNX spec of ``cotok_edge.export.onnx.export_model``: ``graphs``
        (``{key: {"file", "inputs", "outputs", ...}}``, keys from
        :data:`cotok_edge.contract.GRAPHS`; ``video_encoder`` and ``question_decoder``
        required), ``question_tokens`` (L), ``answer_tokens`` (A), ``tokens``
        (``pad_id``, ``bos_id``, ``eos_id``), ``batch`` (``{"mode": "dynamic",
        "profile": {"min", "opt", "max"}}`` or ``{"mode": "fixed", "size": n}``).
    tokenizer: the ``tokenizer.json`` file, relative to the bundle.
    checkpoint: the FP32 checkpoint folder (``checkpoint/``) for the torch backend, or None.
    engine: :class:`EngineInfo`, or None until the engines are built on the device.
    engine_status: ``{"built": bool, "reason": text}``: why no engine was built here.
    plugin: :class:`PluginInfo` of the fused TokenLearner plugin graph, or None.
    dla: engines for the DLA (Orin NX/AGX).
    quantization: INT8 only: method (QAT/PTQ), calibration clips, QAT steps and rate,
        quantizer counts, the layers kept in floating point, which graphs were shipped.
    parity: ``{"slice": {data, format, split, clips, questions, synthetic}, "rows":
        {backend: {accuracy, agreement, max_logit_error, ...}}, "bars": {label: {value,
        bar, passed}}}``: the build's parity measurements (None for a dev bundle).
    versions: ``{package: version}`` of the build (python, torch, onnx, onnxruntime...).
    created: ISO time of the build. command: the build's command line.
    host: ``{cpu, cores, system}`` of the build host. target_info: the target's table row.
    budget_macs: multiply-adds per component and ``total`` (one clip, one question).
    build_seconds: seconds per build stage and ``total``.
    warnings: the build's warnings, also in ``report.md``.
    files: ``{relative path: sha256}`` of every file in the bundle but the manifest;
        filled in by ``write_manifest``, checked by the runtime for the files it uses.

    Validated by :meth:`from_json` and by ``write_manifest`` (:meth:`validate`).
    """

    target: str
    precision: str
    model_config: dict[str, Any]
    onnx: dict[str, Any]
    tokenizer: str = "tokenizer.json"
    checkpoint: str | None = "checkpoint/"
    engine: EngineInfo | None = None
    engine_status: dict[str, Any] | None = None
    plugin: PluginInfo | None = None
    dla: bool = False
    quantization: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    command: str | None = None
    host: dict[str, Any] | None = None
    target_info: dict[str, Any] | None = None
    budget_macs: dict[str, float] | None = None
    build_seconds: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    format: str = BUNDLE_FORMAT

    # JSON --------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> Manifest:
        """Parse and validate a manifest's JSON object (format 1 is upgraded).

        Raises :class:`ManifestError` naming ``where`` and the field: missing, of the
        wrong kind, or a format this version does not read (with the rebuild command).
        """
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where}: not a JSON object")
        fmt = data.get("format")
        if fmt not in READABLE_FORMATS:
            target, precision = data.get("target", "TARGET"), data.get("precision", "PRECISION")
            raise ManifestError(
                f"{where}: manifest format {fmt!r} is not one this version of cotok-edge "
                f"reads ({', '.join(READABLE_FORMATS)}); rebuild the bundle: python -m "
                f"cotok_edge.build --target {target} --precision {precision} --force"
            )
        checkpoint = data.get("checkpoint")
        manifest = cls(
            format=BUNDLE_FORMAT,
            target=_get(data, "target", str, where),
            precision=_get(data, "precision", str, where),
            model_config=_get(data, "model_config", dict, where),
            onnx=_get(data, "onnx", dict, where),
            tokenizer=_opt(data, "tokenizer", str, where, "tokenizer.json"),
            checkpoint=None if not checkpoint else _check(checkpoint, "checkpoint", str, where),
            engine=EngineInfo.from_json(data.get("engine"), where),
            engine_status=_opt(data, "engine_status", dict, where, None),
            plugin=PluginInfo.from_json(data.get("plugin"), where),
            dla=bool(_opt(data, "dla", bool, where, False)),
            quantization=_opt(data, "quantization", dict, where, None),
            parity=_opt(data, "parity", dict, where, None),
            versions=dict(_opt(data, "versions", dict, where, {})),
            created=_opt(data, "created", str, where, None),
            command=_opt(data, "command", str, where, None),
            host=_opt(data, "host", dict, where, None),
            target_info=_opt(data, "target_info", dict, where, None),
            budget_macs=_opt(data, "budget_macs", dict, where, None),
            build_seconds=_opt(data, "build_seconds", dict, where, None),
            warnings=list(_opt(data, "warnings", list, where, [])),
            files=dict(_get(data, "files", dict, where)),
        )
        manifest.validate(where)
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as ``manifest.json`` (``format`` first, ``files`` last)."""
        return {
            "format": self.format,
            "target": self.target,
            "precision": self.precision,
            "created": self.created,
            "command": self.command,
            "model_config": self.model_config,
            "tokenizer": self.tokenizer,
            "checkpoint": self.checkpoint,
            "onnx": self.onnx,
            "quantization": self.quantization,
            "engine": None if self.engine is None else self.engine.to_json(),
            "engine_status": self.engine_status,
            "plugin": None if self.plugin is None else self.plugin.to_json(),
            "dla": self.dla,
            "target_info": self.target_info,
            "budget_macs": self.budget_macs,
            "parity": self.parity,
            "warnings": self.warnings,
            "versions": self.versions,
            "host": self.host,
            "build_seconds": self.build_seconds,
            "files": self.files,
        }

    # Validation --------------------------------------------------------------------
    def validate(self, where: str = "manifest.json") -> None:
        """Check what the runtime relies on; raise :class:`ManifestError` naming the field."""
        if self.format not in READABLE_FORMATS:
            raise _fail(where, "format", f"is {self.format!r}, not one of {READABLE_FORMATS}")
        if self.precision not in PRECISIONS:
            raise _fail(
                where, "precision", f"is {self.precision!r}, not one of {', '.join(PRECISIONS)}"
            )
        streams = _get(self.model_config, "streams", list, f"{where}: model_config")
        if not streams:
            raise _fail(where, "model_config.streams", "is empty")
        for i, s in enumerate(streams):
            w = f"{where}: model_config.streams[{i}]"
            _check(s, f"model_config.streams[{i}]", dict, where)
            _get(s, "name", str, w)
            _get(s, "frames", int, w)
            _get(s, "size", int, w)
        _get(self.model_config, "text", dict, f"{where}: model_config")
        graphs = _get(self.onnx, "graphs", dict, f"{where}: onnx")
        for key in (VIDEO_ENCODER, QUESTION_DECODER):
            _get(graphs, key, dict, f"{where}: onnx.graphs")
        for key, g in graphs.items():
            _check(g, f"onnx.graphs.{key}", dict, where)
            _get(g, "file", str, f"{where}: onnx.graphs.{key}")
        _get(self.onnx, "question_tokens", int, f"{where}: onnx")
        tokens = _get(self.onnx, "tokens", dict, f"{where}: onnx")
        for name in ("pad_id", "eos_id"):
            _get(tokens, name, int, f"{where}: onnx.tokens")
        batch = _get(self.onnx, "batch", dict, f"{where}: onnx")
        mode = batch.get("mode")
        if mode == "fixed":
            _get(batch, "size", int, f"{where}: onnx.batch")
        elif mode == "dynamic":
            _get(_get(batch, "profile", dict, f"{where}: onnx.batch"), "max", int,
                 f"{where}: onnx.batch.profile")  # fmt: skip
        else:
            raise _fail(where, "onnx.batch.mode", f"is {mode!r}, not 'dynamic' or 'fixed'")

    # What the runtime reads --------------------------------------------------------
    @property
    def stream_specs(self) -> list[tuple[str, int, int]]:
        """``[(name, frames, size)]`` of the model's streams, in the graphs' order."""
        return [(s["name"], int(s["frames"]), int(s["size"])) for s in self.model_config["streams"]]

    @property
    def stream_names(self) -> list[str]:
        return [s[0] for s in self.stream_specs]

    @property
    def question_tokens(self) -> int:
        """L: the question length the graphs take."""
        return int(self.onnx["question_tokens"])

    @property
    def pad_id(self) -> int:
        return int(self.onnx["tokens"]["pad_id"])

    @property
    def eos_id(self) -> int:
        return int(self.onnx["tokens"]["eos_id"])

    @property
    def fixed_batch(self) -> int | None:
        """The graphs' fixed batch size, or None for a dynamic batch."""
        batch = self.onnx["batch"]
        return int(batch["size"]) if batch["mode"] == "fixed" else None

    @property
    def max_batch(self) -> int:
        """Rows per inference call: the fixed size, or the dynamic profile's max."""
        fixed = self.fixed_batch
        return fixed if fixed is not None else int(self.onnx["batch"]["profile"]["max"])

    def graph_file(self, key: str) -> str | None:
        """The file of graph ``key`` (``video_encoder``...), or None if the bundle has none."""
        g = self.onnx["graphs"].get(key)
        return None if g is None else str(g["file"])

    def graph(self, key: str) -> dict[str, Any]:
        """The spec of graph ``key`` (``file``, ``inputs``, ``outputs``...); KeyError if absent."""
        return self.onnx["graphs"][key]
