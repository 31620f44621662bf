"""The deployment bundle: its manifest, file hashes and atomic publication.

A bundle is a folder written by ``python -m cotok_edge.build`` and read by
``cotok_edge.runtime``::

    manifest.json                   this module's format (BUNDLE_FORMAT), see below
    video_encoder.onnx              uint8 streams -> projected stream features
    question_decoder.onnx           features + question -> answer ids/scores/logits
    question_decoder_explain.onnx   FP32, adds the TokenLearner maps (explanations)
    question_decoder_plugin.onnx    TensorRT targets only: fused TokenLearner plugin nodes
    tokenizer.json
    checkpoint/                     config.json + model.safetensors (the torch backend)
    plugins/                        plugin sources + CMakeLists.txt (TensorRT targets)
    model.engine                    only where TensorRT and the target GPU were present
    report.md

The manifest is :class:`cotok_edge.manifest.Manifest` (typed, versioned, every field
documented there); ``files`` (``{relative path: sha256}`` for every file in the bundle
except the manifest itself) is filled in by :func:`write_manifest`.

This module imports neither torch nor onnx: the runtime uses it on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .manifest import BUNDLE_FORMAT, BundleError, Manifest

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "BundleError",
    "atomic_write_bytes",
    "Manifest",
    "atomic_folder",
    "hash_files",
    "sha256_of",
    "read_manifest",
    "replace_folder",
    "verify_files",
    "write_manifest",
]

MANIFEST = "manifest.json"


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def bundle_files(root: str | Path) -> list[str]:
    """Every file under ``root`` except the manifest, as sorted POSIX relative paths."""
    root = Path(root)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    )


def hash_files(root: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` for every file of the bundle at ``root``."""
    return {name: sha256_of(Path(root) / name) for name in bundle_files(root)}


def write_manifest(root: str | Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``root`` into ``manifest.files`` and write ``manifest.json``
    (a temporary file, then ``os.replace``); return the manifest."""
    root = Path(root)
    manifest.files = hash_files(root)
    manifest.validate(f"bundle {root}: {MANIFEST}")
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    os.chmod(atomic_write_bytes(root / MANIFEST, text.encode()), 0o644)
    return manifest


def read_manifest(root: str | Path) -> Manifest:
    """Read and validate ``root/manifest.json`` (:meth:`Manifest.from_json`).

    Raises :class:`BundleError` naming the bundle and what is wrong (a missing or
    mistyped field by name; a format this version does not read, with the command
    that rebuilds the bundle). File hashes are checked separately, by
    :func:`verify_files`, for the files a backend uses.
    """
    root = Path(root)
    if not root.exists():
        raise BundleError(f"bundle {root}: no such folder")
    if not root.is_dir():
        raise BundleError(f"bundle {root}: not a folder (a bundle is the folder build wrote)")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle {root}: no {MANIFEST}; is this a folder written by build?")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle {root}: {MANIFEST} is not readable JSON ({e})") from None
    return Manifest.from_json(data, where=f"bundle {root}: {MANIFEST}")


def verify_files(root: str | Path, manifest: Manifest, names: Iterable[str] | None = None) -> None:
    """Check that each named file (all by default) exists and has the manifest's sha256.

    A file under a named folder (``"checkpoint/"``) selects every file below it.
    Raises :class:`BundleError` naming the first file that is missing or altered.
    """
    root = Path(root)
    files = manifest.files
    wanted = list(files) if names is None else _expand(files, names, root)
    for name in wanted:
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle {root}: {name} is listed in {MANIFEST} but missing")
        if sha256_of(path) != files[name]:
            raise BundleError(
                f"bundle {root}: {name} does not match its sha256 in {MANIFEST} "
                f"(altered or corrupted since the build); rebuild the bundle"
            )


def _expand(files: dict[str, str], names: Iterable[str], root: Path) -> list[str]:
    out = []
    for name in names:
        if name.endswith("/"):
            below = [f for f in files if f.startswith(name)]
            if not below:
                raise BundleError(f"bundle {root}: {MANIFEST} lists no files under {name}")
            out += below
        elif name in files:
            out.append(name)
        else:
            raise BundleError(f"bundle {root}: {name} is not listed in {MANIFEST}")
    return out


@contextmanager
def atomic_folder(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``out`` only on success.

    An existing ``out`` is refused unless ``force``; with ``force`` it is replaced only
    once the new folder is complete. On any exception the temporary folder is removed,
    so an interrupted or failed build leaves ``out`` as it was.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: Path, out: Path) -> None:
    """Move the complete folder ``new`` to ``out`` (a sibling), replacing any ``out``: the
    old one is moved aside first and removed only once ``new`` is in place."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
