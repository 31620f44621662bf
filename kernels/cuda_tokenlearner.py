"""Call the CUDA C++ TokenLearner kernel (``csrc/tokenlearner.cu``) from Python through ctypes.

This is how the kernel is checked on a GPU without TensorRT: build the shared
library with nvcc (:func:`build_library`, or CMake's ``cotok_tokenlearner``
target), load it (:func:`load_library`) and call :func:`tokenlearner_cuda` on
torch CUDA tensors; it launches on the current torch stream.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ._checks import check_tokenlearner_inputs
from .reference import LN_EPS, TokenLearnerWeights

__all__ = ["CSRC", "build_library", "load_library", "tokenlearner_cuda"]

CSRC = Path(__file__).resolve().parent / "csrc"
_DTYPES = {torch.float32: 0, torch.float16: 1}
HIDDEN = 64
MAX_S = 16
MAX_C = 1024


def find_nvcc() -> str | None:
    """Path of nvcc: $NVCC, then PATH, then /usr/local/cuda/bin."""
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_library(
    out_dir: str | Path,
    archs: Sequence[int] = (87, 90),
    nvcc: str | None = None,
    extra_flags: Sequence[str] = (),
) -> Path:
    """Compile ``csrc/tokenlearner.cu`` into ``out_dir/libcotok_tokenlearner.so``.

    Args:
        out_dir: folder for the library (created if missing).
        archs: SM versions to emit code for, e.g. (87, 90) for Orin and H100.
        nvcc: compiler path; None looks it up with :func:`find_nvcc`.
        extra_flags: appended to the nvcc command line.

    Raises:
        RuntimeError: nvcc is missing or the compilation fails (its output included).
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set NVCC or put the CUDA toolkit on PATH")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "libcotok_tokenlearner.so"
    cmd = [nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden"]
    for arch in archs:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    cmd += [*extra_flags, str(CSRC / "tokenlearner.cu"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return lib


def load_library(path: str | Path) -> ctypes.CDLL:
    """Load the kernel library and declare the C ABI of ``tokenlearner.h``."""
    lib = ctypes.CDLL(str(path))
    i32, f32, ptr, size = ctypes.c_int32, ctypes.c_float, ctypes.c_void_p, ctypes.c_size_t
    lib.cotok_tokenlearner_forward.restype = i32
    lib.cotok_tokenlearner_forward.argtypes = [i32] + [ptr] * 10 + [size] + [i32] * 6 + [f32, ptr]
    lib.cotok_tokenlearner_workspace_size.restype = size
    lib.cotok_tokenlearner_workspace_size.argtypes = [i32, i32, i32, i32]
    lib.cotok_tokenlearner_default_splits.restype = i32
    lib.cotok_tokenlearner_default_splits.argtypes = [i32, i32, i32]
    lib.cotok_status_string.restype = ctypes.c_char_p
    lib.cotok_status_string.argtypes = [i32]
    return lib


def tokenlearner_cuda(
    lib: ctypes.CDLL,
    x: Tensor,
    cond_bias: Tensor | None,
    w: TokenLearnerWeights,
    num_splits: int = 0,
) -> Tensor:
    """Fused TokenLearner with the CUDA C++ kernel: ``z [B, S, C]`` from ``x [B, N, C]``.

    Args:
        lib: from :func:`load_library`.
        x: CUDA tensor ``[B, N, C]``, float32 or float16.
        cond_bias: ``[B, C]`` or None.
        w: weights as in ``TokenLearnerWeights``; H must be 64, S <= 16, C <= 1024.
        num_splits: slices of N per batch element; 0 lets the kernel choose.

    Raises:
        ValueError: a wrong shape, dtype or device.
        RuntimeError: the kernel returned an error status.
    """
    B, N, C, S, H = check_tokenlearner_inputs(x, cond_bias, w)
    if not x.is_cuda:
        raise ValueError(f"x: expected a CUDA tensor, got device {x.device}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"x: expected float32 or float16, got {x.dtype}")
    if H != HIDDEN or S > MAX_S or C > MAX_C:
        raise ValueError(
            f"w: the CUDA kernel needs H == {HIDDEN}, S <= {MAX_S}, C <= {MAX_C}; "
            f"got H={H}, S={S}, C={C}"
        )
    # One dtype and dense rows for every tensor: the kernel indexes them as packed arrays.
    x = x.contiguous()
    cb = None if cond_bias is None else cond_bias.to(x.dtype).contiguous()
    ws = [t.to(x.dtype).contiguous() for t in w]
    z = torch.empty((B, S, C), device=x.device, dtype=x.dtype)
    if num_splits == 0:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        splits = lib.cotok_tokenlearner_default_splits(B, N, sms)
    else:
        splits = num_splits
    ws_bytes = lib.cotok_tokenlearner_workspace_size(B, S, C, splits)
    workspace = torch.empty(max(ws_bytes, 1), device=x.device, dtype=torch.uint8)
    stream = torch.cuda.current_stream(x.device).cuda_stream
    status = lib.cotok_tokenlearner_forward(
        _DTYPES[x.dtype], x.data_ptr(), None if cb is None else cb.data_ptr(),
        *(t.data_ptr() for t in ws), z.data_ptr(), workspace.data_ptr(), ws_bytes,
        B, N, C, S, H, splits, LN_EPS, stream,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(
            f"cotok_tokenlearner_forward: {lib.cotok_status_string(status).decode()}"
        )
    return z
