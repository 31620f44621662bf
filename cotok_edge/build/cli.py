"""``python -m cotok_edge.build``: the argument table, its validation, and dispatch.

    python -m cotok_edge.build --target jetson-orin [--precision int8|fp16|fp32]
        [--checkpoint DIR] [--out DIR] [--force] [--calib-data DIR] [--qat-steps N]
        [--plugin/--no-plugin] ...
    python -m cotok_edge.build --finish BUNDLE       (on the device; torch-free)
    python -m cotok_edge.build --verify BUNDLE [--backend B]

Every argument is checked before any work (:func:`validate`). Exit status: 0 built
(parity bars met), 1 built but a parity bar was missed (``--strict``: no bundle), 2 bad
arguments. The stages are in :mod:`.stages`, the finish in :mod:`.finish`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotok_edge.data.datasets import FORMATS

__all__ = ["ARGUMENTS", "MIN_CALIB_CLIPS", "main", "parse_args", "validate"]

MIN_CALIB_CLIPS = 512

#: The command line: ``(flags, argparse keyword arguments)``, in ``--help`` order.
ARGUMENTS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--target",), {"help": "build target (see --help's list)"}),
    (("--precision",), {"help": "int8 | fp16 | fp32 (default: the target's first, int8)"}),
    (("--checkpoint",), {"type": Path, "help": "model folder (default: the shipped model)"}),
    (("--out",), {"type": Path, "help": "bundle folder (default: bundles/TARGET-PRECISION)"}),
    (("--force",), {"action": "store_true", "help": "replace an existing --out"}),
    (("--calib-data",), {"type": Path, "help": "QA dataset for calibration, QAT, parity"}),
    (("--calib-format",), {"default": "msrvtt-qa", "choices": FORMATS,
                           "help": "format of --calib-data"}),
    (("--calib-clips",), {"type": int, "default": MIN_CALIB_CLIPS, "help": "calibration clips"}),
    (("--test-clips",), {"type": int, "default": 100, "help": "clips of the parity slice"}),
    (("--test-split",), {"default": "test", "help": "split of the parity slice"}),
    (("--qat-steps",), {"type": int, "default": 40, "help": "QAT steps (0: PTQ only)"}),
    (("--qat-lr",), {"type": float, "default": 1e-5}),
    (("--qat-clips",), {"type": int, "default": 8, "help": "clips per QAT step"}),
    (("--plugin",), {"action": argparse.BooleanOptionalAction, "default": None,
                     "help": "also export the fused-TokenLearner plugin graph (default: on "
                     "for TensorRT targets)"}),
    (("--dla",), {"action": "store_true", "help": "build for DLA (Orin NX/AGX only)"}),
    (("--cache-dir",), {"type": Path, "help": "generated/decoded clip cache"}),
    (("--strict",), {"action": "store_true", "help": "no bundle when a parity bar is missed"}),
    (("--threads",), {"type": int, "help": "torch/ONNX Runtime threads (default: all cores)"}),
    (("--quiet",), {"action": "store_true", "help": "no progress bars"}),
    (("--finish",), {"type": Path, "metavar": "BUNDLE",
                     "help": "on the device: build the TensorRT engines of BUNDLE, then verify"}),
    (("--verify",), {"type": Path, "metavar": "BUNDLE",
                     "help": "answer BUNDLE's parity slice again and compare with the build"}),
    (("--backend",), {"default": "auto", "help": "runtime backend for --verify"}),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from cotok_edge.export.targets import target_names

    p = argparse.ArgumentParser(
        prog="python -m cotok_edge.build",
        description="Build a deployment bundle (ONNX, INT8 Q/DQ, TensorRT plan) for a target.",
    )
    for flags, kwargs in ARGUMENTS:
        if flags == ("--target",):
            kwargs = {**kwargs, "help": f"one of: {', '.join(target_names())}"}
        p.add_argument(*flags, **kwargs)
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and validate ``argv``; a bad argument exits with status 2 and one line."""
    p = _parser()
    args = p.parse_args(argv)
    if args.finish or args.verify:
        folder = args.finish or args.verify
        if not (folder / "manifest.json").is_file():
            p.error(f"{folder}: not a bundle (no manifest.json)")
        return args
    if args.target is None:
        p.error("--target is required (or --finish/--verify BUNDLE)")
    try:
        validate(args)
    except ValueError as e:
        p.error(str(e))
    return args


def validate(args: argparse.Namespace) -> None:
    """Check a build's arguments and fill in the defaults that depend on the target
    (precision, plugin, out). Raises ``ValueError`` naming the flag."""
    from cotok_edge.export.targets import get_target
    from cotok_edge.export.targets import validate as validate_target

    t = get_target(args.target)
    args.precision = (args.precision or t.precisions[0]).lower()
    if args.plugin is None:
        args.plugin = bool(t.tensorrt)
    validate_target(t, args.precision, dla=args.dla, plugin=args.plugin)
    args.target = t.name
    for name in ("calib_clips", "test_clips", "qat_clips"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.qat_steps < 0:
        raise ValueError("--qat-steps must be 0 or more")
    if args.qat_lr <= 0:
        raise ValueError("--qat-lr must be positive")
    if args.calib_data is not None and not args.calib_data.is_dir():
        raise ValueError(f"--calib-data {args.calib_data}: no such folder")
    if args.checkpoint is not None:
        ck = args.checkpoint
        if not ck.is_dir():
            raise ValueError(f"--checkpoint {ck}: no such folder")
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (ck / f).is_file():
                raise ValueError(f"--checkpoint {ck}: no {f} (a folder written by train)")
    if args.out is None:
        args.out = Path("bundles") / f"{args.target}-{args.precision}"
    if args.out.exists() and not args.force:
        raise ValueError(f"--out {args.out} exists; pass --force to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parse_args(argv)
    if args.finish:
        from .finish import finish

        return finish(args.finish, args.quiet)
    if args.verify:
        from .finish import verify

        return verify(args.verify, args.backend, args.quiet)
    from .stages import build

    try:
        return build(args)
    except KeyboardInterrupt:
        print("interrupted: no bundle written", file=sys.stderr)
        return 130
