"""The CUDA sources compile (nvcc, sm_87 and sm_90) and the plugin compiles against TensorRT.

No GPU is needed: these build the code without running it. Each test skips,
saying why, where its compiler or TensorRT headers are missing.

The plugin is compiled (not linked) against the real public headers of every
TensorRT version a bundle may meet: ``tensorrt-headers/<version>/include`` in
the shared folder beside the repository (``<repo>/../shared/tensorrt-headers``),
or in ``$COTOK_TENSORRT_HEADERS`` when set.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import cotok_edge.kernels as kernels_pkg
import pytest
from cotok_edge.kernels.cuda_tokenlearner import build_library, find_nvcc, load_library

KERNELS = Path(kernels_pkg.__file__).resolve().parent
CSRC = KERNELS / "csrc"
REPO = Path(__file__).resolve().parent.parent
#: TensorRT versions whose headers the plugin must compile against: JetPack 6 and 11.x.
TENSORRT_HEADER_VERSIONS = ("10.3", "11.1")
WARNINGS = ["-Wall", "-Wextra", "-Werror"]
PLUGIN_EXPORTS = {"getCreators", "setLoggerFinder", "cotokPluginTensorRTVersion"}
C_ABI = [
    "cotok_tokenlearner_forward",
    "cotok_tokenlearner_workspace_size",
    "cotok_tokenlearner_workspace_bound",
    "cotok_tokenlearner_default_splits",
    "cotok_status_string",
]


def _cuda_home(nvcc: str) -> Path:
    # nvcc may be a wrapper outside the toolkit (/usr/local/bin); find the headers' folder.
    homes = [os.environ.get("CUDA_HOME"), Path(nvcc).resolve().parent.parent, "/usr/local/cuda"]
    for home in filter(None, homes):
        if (Path(home) / "include" / "cuda_runtime_api.h").is_file():
            return Path(home)
    pytest.skip("CUDA headers (cuda_runtime_api.h) not found; set CUDA_HOME")


def _cuda_include(nvcc: str) -> Path:
    return _cuda_home(nvcc) / "include"


def _find_tensorrt_include() -> Path | None:
    roots = [os.environ.get("TENSORRT_ROOT"), "/usr/local/tensorrt", "/usr"]
    suffixes = ["include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"]
    for root in filter(None, roots):
        for suffix in suffixes:
            if (Path(root) / suffix / "NvInferRuntime.h").is_file():
                return Path(root) / suffix
    return None


def tensorrt_headers_root() -> Path:
    """``$COTOK_TENSORRT_HEADERS``, else ``<repo>/../shared/tensorrt-headers``."""
    env = os.environ.get("COTOK_TENSORRT_HEADERS")
    return Path(env) if env else REPO.parent / "shared" / "tensorrt-headers"


def _cxx() -> str:
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler found")
    return cxx


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def nvcc() -> str:
    path = find_nvcc()
    if path is None:
        pytest.skip("nvcc not found (set NVCC or put the CUDA toolkit on PATH)")
    return path


@pytest.fixture(scope="module")
def kernel_library(nvcc, tmp_path_factory) -> Path:
    """The kernel library built for sm_87 and sm_90, warnings as errors (built once)."""
    return build_library(
        tmp_path_factory.mktemp("cuda"), archs=(87, 90), nvcc=nvcc,
        extra_flags=["-Xcompiler", "-Wall,-Wextra,-Werror", "-Werror", "all-warnings"],
    )  # fmt: skip


def test_kernel_library_builds_for_sm87_and_sm90(kernel_library, nvcc):
    """One shared library with sm_87 and sm_90 code; exports exactly the C ABI."""
    nm = shutil.which("nm")
    if nm:
        out = subprocess.run(
            [nm, "-D", "--defined-only", str(kernel_library)], capture_output=True, text=True
        )
        exported = {line.split()[-1] for line in out.stdout.splitlines() if " T " in line}
        assert set(C_ABI) <= exported, exported
        assert all(name.startswith("cotok_") for name in exported), exported
    cuobjdump = _cuda_home(nvcc) / "bin" / "cuobjdump"
    if cuobjdump.is_file():
        out = subprocess.run(
            [str(cuobjdump), "--list-elf", str(kernel_library)], capture_output=True, text=True
        )
        assert "sm_87" in out.stdout and "sm_90" in out.stdout, out.stdout


def test_host_side_of_the_c_abi_through_ctypes(kernel_library):
    """The host-only entry points answer through ctypes on a machine without a GPU."""
    lib = load_library(kernel_library)
    # About two blocks per SM, capped by the number of 32-position tiles of N.
    assert lib.cotok_tokenlearner_default_splits(1, 3136, 132) == 98
    assert lib.cotok_tokenlearner_default_splits(8, 3136, 132) == 33
    assert lib.cotok_tokenlearner_default_splits(1, 40, 132) == 2
    assert lib.cotok_tokenlearner_default_splits(512, 3136, 132) == 1
    assert lib.cotok_tokenlearner_workspace_size(8, 8, 512, 1) == 0
    one = lib.cotok_tokenlearner_workspace_size(8, 8, 512, 33)
    assert one >= 8 * 33 * 8 * (512 + 2) * 4
    assert lib.cotok_status_string(2).decode().startswith("unsupported")
    # Bad arguments are refused before any CUDA call is made.
    i32 = ctypes.c_int32
    fwd = lib.cotok_tokenlearner_forward
    nulls = [None] * 10
    status = fwd(0, *nulls, 0, *(i32(v) for v in (1, 1, 1, 1, 64, 0)), ctypes.c_float(1e-6), None)
    assert status == 1  # COTOK_ERR_INVALID_ARGUMENT: null pointers


def test_header_is_plain_c(nvcc, tmp_path):
    """tokenlearner.h compiles as C, so ctypes users and C code can include it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) found")
    src = tmp_path / "use.c"
    src.write_text('#include "tokenlearner.h"\nint f(void) { return COTOK_OK; }\n')
    _run([cc, "-std=c99", "-Wall", "-Werror", "-c", f"-I{CSRC}", f"-I{_cuda_include(nvcc)}",
          str(src), "-o", str(tmp_path / "use.o")])  # fmt: skip


@pytest.mark.parametrize("version", TENSORRT_HEADER_VERSIONS)
def test_plugin_compiles_against_the_real_tensorrt_headers(version, nvcc, tmp_path):
    """The plugin compiles with -Wall -Wextra -Werror against TensorRT <version>'s headers,
    exports the plugin-library entry points, and says which headers it was built against."""
    include = tensorrt_headers_root() / version / "include"
    if not include.is_dir():
        pytest.skip(
            f"TensorRT {version} headers not found at {include} (the shared folder beside "
            "the repository, or set COTOK_TENSORRT_HEADERS)"
        )
    obj = tmp_path / f"tokenlearner_plugin-{version}.o"
    _run([
        _cxx(), "-std=c++17", *WARNINGS, "-c", "-fPIC", "-fvisibility=hidden",
        f"-I{CSRC}", f"-isystem{include}", f"-isystem{_cuda_include(nvcc)}",
        str(CSRC / "tokenlearner_plugin.cpp"), "-o", str(obj),
    ])  # fmt: skip
    nm = shutil.which("nm")
    if nm:
        out = subprocess.run([nm, "--defined-only", str(obj)], capture_output=True, text=True)
        defined = {line.split()[-1] for line in out.stdout.splitlines() if " T " in line}
        assert PLUGIN_EXPORTS <= defined, defined
    # The version macro the library reports is the headers' own.
    src = tmp_path / "version.cpp"
    major, minor = (int(x) for x in version.split("."))
    src.write_text(
        '#include "tokenlearner_plugin.h"\n'
        f"static_assert(COTOK_PLUGIN_TENSORRT_VERSION / 100 == {major * 100 + minor}, "
        '"headers of another TensorRT version");\n'
    )
    _run([_cxx(), "-std=c++17", *WARNINGS, "-fsyntax-only", f"-I{CSRC}",
          f"-isystem{include}", f"-isystem{_cuda_include(nvcc)}", str(src)])  # fmt: skip


def test_plugin_refuses_tensorrt_headers_older_than_10_3(nvcc, tmp_path):
    """A TensorRT without IPluginV3 (before 10.3 here) is a clear #error, not a page of errors."""
    include = tensorrt_headers_root() / "10.3" / "include"
    if not include.is_dir():
        pytest.skip(f"TensorRT 10.3 headers not found at {include}")
    old = tmp_path / "include"
    shutil.copytree(include, old)
    version_h = old / "NvInferVersion.h"
    version_h.write_text(
        version_h.read_text().replace("#define NV_TENSORRT_MAJOR 10", "#define NV_TENSORRT_MAJOR 8")
    )
    proc = subprocess.run(
        [_cxx(), "-std=c++17", "-fsyntax-only", f"-I{CSRC}", f"-isystem{old}",
         f"-isystem{_cuda_include(nvcc)}", str(CSRC / "tokenlearner_plugin.cpp")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "needs TensorRT 10.3 or later" in proc.stderr


def test_plugin_compiles_against_installed_tensorrt(nvcc, tmp_path):
    include = _find_tensorrt_include()
    if include is None:
        pytest.skip(
            "TensorRT headers (NvInferRuntime.h) not found under TENSORRT_ROOT, "
            "/usr/local/tensorrt or /usr; the plugin is only compiled where TensorRT is installed"
        )
    _run([
        _cxx(), "-std=c++17", *WARNINGS, "-fsyntax-only",
        f"-I{CSRC}", f"-isystem{include}", f"-isystem{_cuda_include(nvcc)}",
        str(CSRC / "tokenlearner_plugin.cpp"),
    ])  # fmt: skip
