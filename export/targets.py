"""Deployment targets: one table, and the argument checks every export/build step shares.

Facts and where they come from (checked while writing this; see ``trt_onnx_ops.json``
for the ONNX operator tables and their sources):

- JetPack 6.1 and 6.2 ship TensorRT 10.3, CUDA 12.6, cuDNN 9.3 (Torch-TensorRT's
  "Torch-TensorRT in JetPack" page for 6.1 and 6.2). Every Jetson Orin module is
  compute capability 8.7 (sm_87, Ampere); Orin has INT8 and FP16 tensor cores and no
  FP8 (FP8 tensor cores start with sm_89).
- DLA (NVDLA v2): Orin NX (1 core on the 8 GB module, 2 on the 16 GB one) and AGX Orin
  (2 cores) have it, Orin Nano has none. DLA runs FP16 and INT8 only, never FP32.
  ``jetson-orin`` without a module name means "any Orin", so it must hold on a Nano
  too: no DLA there; name ``jetson-orin-nx`` or ``jetson-orin-agx`` to use it. We
  assume one DLA core (core 0) on NX, since the 8 GB module has only one.
- ONNX opsets the TensorRT ONNX parsers read: 10.0 documents "opset 9 to opset 20"
  (onnx-tensorrt ``docs/operators.md`` at 10.0) and its changelog records no opset
  change up to 10.3, so 10.3 is taken as 9..20; 10.15 documents 9..24; TensorRT 11.5's
  release notes add opset 25, so 11.0-11.4 are taken as 9..24. Every target exports
  opset 17: inside all of these ranges, the first opset with ``LayerNormalization``
  (which TensorRT imports as one normalisation layer), and the opset the kernels'
  plugin export is tested at.
- TensorRT 11 is strongly typed only: the FP16/INT8/... builder flags and trtexec's
  ``--fp16``/``--int8`` are removed, precision comes from the ONNX (Q/DQ nodes for
  INT8, a graph converted with ModelOpt AutoCast for FP16). NVIDIA's 11.x migration
  guide lists JetPack as not supported by 11.x, so Jetson targets stay on 10.3.

Workspace limits: Jetson memory is shared between the CPU (which also decodes the
video) and the GPU, so the limits are small and scale with the smallest module of each
name: Orin Nano 4 GB / generic Orin 512 MiB, Orin NX 1 GiB, AGX Orin 2 GiB, desktop
4 GiB. TensorRT never allocates more than a layer needs; the limit only bounds the
tactics it may try.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
"""Precisions a user may ask for; each target lists those it supports."""

ONNX_OPSET = 17

MiB = 1 << 20


@dataclass(frozen=True)
class Target:
    """One deployment target.

    Attributes:
        name: the ``--target`` name.
        description: one line for help texts and reports.
        gpu_arch: ``"sm_87"``, ``"sm_80+"`` or ``None`` (CPU only).
        compute_capabilities: accepted ``(major, minor)`` of the GPU that builds the
            engine; empty for CPU. Engines are not portable across these.
        tensorrt: TensorRT versions the target runs, e.g. ``("10.3",)``; empty for CPU.
            Keys of ``trt_onnx_ops.json``'s tables come from :func:`onnx_table_for`.
        cuda: CUDA version that goes with it (``None`` where it varies).
        jetpack: JetPack releases, for Jetson targets.
        precisions: precisions this target builds.
        dla_cores: DLA cores guaranteed on every module of this name (0: no DLA).
        workspace_bytes: default TensorRT workspace limit.
        onnx_opset: opset the export uses for this target.
        max_batch: default largest batch of the TensorRT optimisation profile.
        runtime: ``"tensorrt"`` or ``"onnxruntime"``, the backend the bundle is for.
    """

    name: str
    description: str
    gpu_arch: str | None
    compute_capabilities: tuple[tuple[int, int], ...]
    tensorrt: tuple[str, ...]
    cuda: str | None
    jetpack: tuple[str, ...]
    precisions: tuple[str, ...]
    dla_cores: int
    workspace_bytes: int
    onnx_opset: int
    max_batch: int
    runtime: str

    @property
    def has_gpu(self) -> bool:
        return self.gpu_arch is not None

    @property
    def is_jetson(self) -> bool:
        return bool(self.jetpack)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for the bundle manifest)."""
        d = asdict(self)
        d["compute_capabilities"] = [f"{a}.{b}" for a, b in self.compute_capabilities]
        return d


_ORIN_CC = ((8, 7),)
# sm_80+ as the design asks: Ampere (8.0, 8.6, 8.7), Ada (8.9), Hopper (9.0), Blackwell.
_DESKTOP_CC = ((8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0))
_JETPACK = ("6.1", "6.2")
_ORIN_PRECISIONS = ("int8", "fp16", "fp32")


def _orin(name: str, module: str, dla: int, workspace_mib: int) -> Target:
    return Target(
        name=name,
        description=f"NVIDIA Jetson {module} (sm_87), JetPack 6.1/6.2: TensorRT 10.3, CUDA 12.6",
        gpu_arch="sm_87",
        compute_capabilities=_ORIN_CC,
        tensorrt=("10.3",),
        cuda="12.6",
        jetpack=_JETPACK,
        precisions=_ORIN_PRECISIONS,
        dla_cores=dla,
        workspace_bytes=workspace_mib * MiB,
        onnx_opset=ONNX_OPSET,
        max_batch=4,
        runtime="tensorrt",
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _orin("jetson-orin", "Orin (any module)", dla=0, workspace_mib=512),
        _orin("jetson-orin-nano", "Orin Nano", dla=0, workspace_mib=512),
        _orin("jetson-orin-nx", "Orin NX", dla=1, workspace_mib=1024),
        _orin("jetson-orin-agx", "AGX Orin", dla=2, workspace_mib=2048),
        Target(
            name="desktop",
            description="desktop/server GPU sm_80+: TensorRT 10.x or 11.x",
            gpu_arch="sm_80+",
            compute_capabilities=_DESKTOP_CC,
            tensorrt=("10.x", "11.x"),
            cuda=None,
            jetpack=(),
            precisions=("int8", "fp16", "fp32"),
            dla_cores=0,
            workspace_bytes=4096 * MiB,
            onnx_opset=ONNX_OPSET,
            max_batch=8,
            runtime="tensorrt",
        ),
        Target(
            name="cpu",
            description="CPU only: ONNX Runtime, FP32 or INT8 Q/DQ",
            gpu_arch=None,
            compute_capabilities=(),
            tensorrt=(),
            cuda=None,
            jetpack=(),
            precisions=("int8", "fp32"),
            dla_cores=0,
            workspace_bytes=0,
            onnx_opset=ONNX_OPSET,
            max_batch=8,
            runtime="onnxruntime",
        ),
    )
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str | Target) -> Target:
    """The target called ``name``; ``ValueError`` naming the closest known name otherwise."""
    if isinstance(name, Target):
        return name
    if name in TARGETS:
        return TARGETS[name]
    close = difflib.get_close_matches(str(name), TARGETS, n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown target {name!r}{hint} (targets: {', '.join(TARGETS)})")


def validate(
    target: str | Target, precision: str, dla: bool = False, plugin: bool = False
) -> Target:
    """Check a (target, precision, DLA, plugin) choice up front; return the target.

    Raises ``ValueError`` with the reason: an unknown target or precision, a
    precision the target's hardware lacks (FP8 on Orin), DLA where there is none
    (Orin Nano, generic ``jetson-orin``, desktop, CPU) or with FP32, a TensorRT
    plugin on the CPU target.
    """
    t = get_target(target)
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; choose one of {', '.join(t.precisions)}"
        )
    if precision not in t.precisions:
        if precision == "fp8" and t.gpu_arch == "sm_87":
            why = "Jetson Orin (sm_87) has no FP8 tensor cores; FP8 needs sm_89 or newer"
        elif precision == "fp8":
            why = "this project builds INT8, FP16 and FP32 only (no FP8 Q/DQ export)"
        elif not t.has_gpu:
            why = "the CPU target runs ONNX Runtime, which has no FP16 kernels worth using"
        else:
            why = "not supported by this target"
        raise ValueError(
            f"precision {precision!r} is not available on target {t.name!r}: {why}; "
            f"choose one of {', '.join(t.precisions)}"
        )
    if dla:
        if t.dla_cores == 0:
            if t.name == "jetson-orin-nano":
                why = "Jetson Orin Nano has no DLA"
            elif t.name == "jetson-orin":
                why = (
                    "'jetson-orin' stands for any Orin module and Orin Nano has no DLA; "
                    "name the module: --target jetson-orin-nx or jetson-orin-agx"
                )
            else:
                why = f"target {t.name!r} has no DLA (DLA exists on Jetson Orin NX and AGX Orin)"
            raise ValueError(f"DLA requested on {t.name!r}: {why}")
        if precision == "fp32":
            raise ValueError(
                f"DLA runs FP16 and INT8 only; precision 'fp32' cannot use DLA on {t.name!r}"
            )
    if plugin and not t.tensorrt:
        raise ValueError(
            f"the TensorRT plugin variant cannot run on target {t.name!r} "
            "(ONNX Runtime has no kernel for cotok::CoTokTokenLearner); export without it"
        )
    return t


def onnx_table_for(trt_version: str) -> str:
    """Key of the operator table in ``trt_onnx_ops.json`` for a target's TensorRT entry.

    ``"10.3"`` (Jetson) and ``"10.x"`` (desktop) both use the 10.3 table: operator
    support only grows within 10.x, so 10.3 is the floor that any 10.3+ parser
    reads. ``"11.x"`` uses the 11 table.
    """
    major = trt_version.split(".")[0]
    if major == "10":
        return "10.3"
    if major == "11":
        return "11"
    raise ValueError(f"no ONNX operator table for TensorRT {trt_version!r}")
