"""The Triton TokenLearner kernels, run by Triton's CPU interpreter, against the reference.

``@triton.jit`` chooses between compiling and interpreting when a function is
decorated, reading ``TRITON_INTERPRET`` then; that includes Triton's own
``triton.language`` helpers, decorated when ``triton`` is first imported. So
this module sets the variable before importing anything. If ``triton`` was
already imported without it (another test module imported torch parts that
import triton), the tests here cannot run in this process: they skip, and
``test_interpreter_suite_in_fresh_process`` runs this file again in a new
Python process with the variable set, and fails if that run fails. The
variable stays set (no other test launches Triton kernels; CI has no GPU).
Shapes are tiny: the interpreter is ~10^4 times slower than a GPU.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

_TRITON_PREIMPORTED = "triton" in sys.modules
os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")


def _interpreting_here() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return not _TRITON_PREIMPORTED or isinstance(tl.zeros, InterpretedFunction)


INTERPRETING = _interpreting_here()

from cotok_edge.kernels.reference import (  # noqa: E402
    TokenLearnerWeights,
    tokenlearner_reference,
)
from cotok_edge.kernels.triton_tokenlearner import tokenlearner_triton  # noqa: E402


def test_interpreter_suite_in_fresh_process():
    if INTERPRETING:
        pytest.skip("the interpreter tests run in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(autouse=True)
def _interpreted_kernels(request):
    if not INTERPRETING:
        if request.node.name != "test_interpreter_suite_in_fresh_process":
            pytest.skip(
                "triton was imported without TRITON_INTERPRET earlier in this process; "
                "test_interpreter_suite_in_fresh_process runs these tests in a new process"
            )
        return
    name = "cotok_edge.kernels._triton_kernels"
    from triton.runtime.interpreter import InterpretedFunction

    module = sys.modules.get(name) or importlib.import_module(name)
    if not isinstance(module.tokenlearner_fwd_kernel, InterpretedFunction):
        importlib.reload(module)
    assert isinstance(module.tokenlearner_fwd_kernel, InterpretedFunction)


def make_inputs(B, N, C, S, H=64, dtype=torch.float32, cond=True, seed=0):
    """Weights scaled like a trained layer: logits of order 1, so the softmax is not one-hot."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x = randn(B, N, C)
    cb = randn(B, C, scale=0.5) if cond else None
    w = TokenLearnerWeights(
        ln_weight=1.0 + randn(C, scale=0.1),
        ln_bias=randn(C, scale=0.1),
        w1=randn(H, C, scale=C**-0.5),
        b1=randn(H, scale=0.1),
        w2=randn(S, H, scale=H**-0.5),
        b2=randn(S, scale=0.1),
    )
    return x, cb, w


# (B, N, C, S, num_splits, block_n, cond): N not a multiple of the block,
# B = 1 and S = 1, a large C with few positions, several slices of N (the
# combine kernel), more slices asked for than N has blocks, no cond_bias.
CASES = [
    pytest.param(2, 37, 32, 3, 1, 16, True, id="N-not-multiple-of-block"),
    pytest.param(1, 50, 24, 1, 1, 16, True, id="B1-S1-C-not-pow2"),
    pytest.param(2, 40, 256, 8, 1, 16, True, id="large-C"),
    pytest.param(2, 70, 32, 4, 3, 16, True, id="split-N-3"),
    pytest.param(1, 33, 256, 8, 2, 16, True, id="split-N-large-C"),
    pytest.param(1, 20, 16, 2, 8, 16, True, id="more-splits-than-blocks"),
    pytest.param(3, 45, 40, 5, 2, 32, False, id="no-cond-split"),
]


@pytest.mark.parametrize("B, N, C, S, num_splits, block_n, cond", CASES)
def test_fp32_matches_reference(B, N, C, S, num_splits, block_n, cond):
    x, cb, w = make_inputs(B, N, C, S, cond=cond)
    z = tokenlearner_triton(x, cb, w, num_splits=num_splits, block_n=block_n, precision="ieee")
    z_ref, _ = tokenlearner_reference(x, cb, w)
    assert z.shape == (B, S, C) and z.dtype == x.dtype
    torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)


def test_split_and_single_pass_agree():
    """The combine kernel's cross-slice rescaling equals one pass over all of N."""
    x, cb, w = make_inputs(2, 100, 32, 3, seed=1)
    one = tokenlearner_triton(x, cb, w, num_splits=1, block_n=16, precision="ieee")
    many = tokenlearner_triton(x, cb, w, num_splits=5, block_n=16, precision="ieee")
    torch.testing.assert_close(many, one, atol=1e-6, rtol=1e-6)


def test_fp16_no_worse_than_fp16_reference():
    """FP16 inputs, FP32 accumulation: at least as close to the FP32 math as PyTorch's FP16 path."""
    x, cb, w = make_inputs(2, 37, 64, 4, dtype=torch.float16, seed=2)
    z = tokenlearner_triton(x, cb, w, num_splits=2, block_n=16)
    assert z.dtype == torch.float16
    w32 = TokenLearnerWeights(*(t.float() for t in w))
    z32, _ = tokenlearner_reference(x.float(), cb.float(), w32)
    z16, _ = tokenlearner_reference(x, cb, w)
    err = (z.float() - z32).abs().max().item()
    err_ref = (z16.float() - z32).abs().max().item()
    assert err <= 2 * err_ref + 1e-3, (err, err_ref)


def test_strided_x_is_accepted():
    """A view whose rows are not packed (e.g. a slice of a wider tensor) gives the same result."""
    x, cb, w = make_inputs(2, 20, 32, 3, seed=3)
    wide = torch.zeros(2, 20, 48)
    wide[..., :32] = x
    view = wide[..., :32]
    assert not view.is_contiguous()
    z = tokenlearner_triton(view, cb, w, num_splits=1, block_n=16, precision="ieee")
    torch.testing.assert_close(z, tokenlearner_reference(x, cb, w)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, cb, w: (x[0], cb, w), r"x: expected shape \[B, N, C\]"),
        (lambda x, cb, w: (x, cb[:, :-1], w), r"cond_bias: expected shape \[B, C\]"),
        (lambda x, cb, w: (x, cb, w._replace(w2=w.w2[:, :-1])), r"w.w2: expected shape \[S, H\]"),
        (lambda x, cb, w: (x, cb, w._replace(b1=w.b1[:-1])), r"w.b1: expected shape \[H\]"),
        (lambda x, cb, w: (x, cb, w._replace(ln_weight=w.ln_weight[:-1])), r"w.ln_weight"),
    ],
)
def test_bad_shapes_raise_value_error(mutate, match):
    x, cb, w = make_inputs(1, 8, 16, 2)
    with pytest.raises(ValueError, match=match):
        tokenlearner_triton(*mutate(x, cb, w))


def test_bad_options_raise_value_error():
    x, cb, w = make_inputs(1, 8, 16, 2)
    with pytest.raises(ValueError, match="block_n"):
        tokenlearner_triton(x, cb, w, block_n=24)
    with pytest.raises(ValueError, match="num_splits"):
        tokenlearner_triton(x, cb, w, num_splits=0)
    with pytest.raises(ValueError, match="precision"):
        tokenlearner_triton(x, cb, w, precision="fp8")
    x2, cb2, w2 = make_inputs(1, 8, 16, 2, H=48)
    with pytest.raises(ValueError, match="power of two"):
        tokenlearner_triton(x2, cb2, w2)


def test_launch_config_fits_the_chip_that_refused_the_first_one():
    from cotok_edge.kernels.triton_tokenlearner import launch_config, shared_memory_bytes

    # What Triton asked for (paper-s1, fp32) on an H100 at three stages and on an H200 at
    # one, and what both allow.
    h100 = 232_448
    assert shared_memory_bytes(32, 512, 16, 64, 4, stages=3) == 331_776
    assert shared_memory_bytes(32, 512, 16, 64, 4, stages=1) == 266_240
    for block_c, elsize in [(512, 4), (512, 2), (256, 4), (1024, 2)]:
        bn, stages = launch_config(block_c, 16, 64, elsize, h100)
        assert shared_memory_bytes(bn, block_c, 16, 64, elsize, stages) <= h100
    assert launch_config(512, 16, 64, 4, h100) == (16, 2)  # a stage goes before positions
    assert launch_config(256, 16, 64, 2, h100) == (64, 3)  # what fitted stays as it was
    assert launch_config(512, 16, 64, 2, 163 * 1024)[0] == 32  # Orin, fp16
    with pytest.raises(ValueError, match="shared memory"):
        launch_config(4096, 16, 64, 4, h100)
    with pytest.raises(ValueError, match="shared memory"):  # a given block is kept or refused
        launch_config(512, 16, 64, 4, 100_000, block_n=64)
