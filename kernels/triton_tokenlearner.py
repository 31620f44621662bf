"""Fused TokenLearner forward in Triton, as the torch custom op ``cotok::tokenlearner_fused``.

Three layers:

- :func:`tokenlearner_triton` launches the Triton kernels directly. It needs a
  CUDA tensor, or a CPU tensor when ``TRITON_INTERPRET=1`` was set before the
  kernels were first imported (the interpreter, used by the CPU tests).
- ``torch.ops.cotok.tokenlearner_fused`` is a ``torch.library.custom_op`` with
  the reference as its default kernel (any device), the Triton kernel on CUDA,
  a fake kernel (shape only) so it traces under ``torch.compile`` and
  ``torch.export``, and an autograd formula (see below).
- :func:`enable_fused_tokenlearner` registers the op with the model's
  dispatcher (``cotok_edge.model.tokenlearner.register_fused``) so every
  ``TokenLearner`` uses it on CUDA when Triton is installed, and the reference
  elsewhere.

Backward: the op is registered with an autograd formula that recomputes the
reference forward and differentiates it. The fused forward keeps its memory
saving (no [B, S, N] maps stored between forward and backward) and training on
the fused path gives exactly the reference's gradients; the price is one
reference forward inside backward, as with activation checkpointing. A
forward-only op would instead have made the model silently fall back (or
fail) whenever gradients are needed, i.e. during every training step.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from ._checks import check_tokenlearner_inputs
from .reference import LN_EPS, TokenLearnerWeights, tokenlearner_reference

__all__ = [
    "enable_fused_tokenlearner",
    "fused_applies",
    "tokenlearner_fused",
    "tokenlearner_triton",
    "triton_available",
]

# Cap on slices of N per batch element: the combine kernel loads all slices of
# one (b, s) at once and the workspace grows linearly with it.
MAX_SPLITS = 128


@functools.cache
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (says nothing about a GPU)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install must not break the model's import
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _cdiv(a: int, b: int) -> int:
    return -(a // -b)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def shared_memory_bytes(block_n: int, block_c: int, block_s: int, h: int, elsize: int,
                        stages: int) -> int:  # fmt: skip
    """Shared memory the forward kernel asks for: the ``[BLOCK_N, C]`` tile of ``x`` once
    per pipeline stage but at least twice, ``W1^T [C, H]`` and ``W2^T [H, S]`` once each.

    Read off Triton's own counts for paper-s1 in fp32 (block 32 x 512, H 64, S padded to
    16), both refused by the 232,448 bytes a Hopper chip allows: 331,776 at three stages
    (an H100) and 266,240 at one (an H200). Unpipelined, ``x`` still takes two tiles,
    likely because it feeds two matrix products in different layouts.
    """
    tiles = max(stages, 2)
    return (tiles * block_n * block_c + h * block_c + block_s * h) * elsize


def launch_config(
    block_c: int, block_s: int, h: int, elsize: int, max_shared: int, block_n: int | None = None
) -> tuple[int, int]:
    """``(block_n, num_stages)`` whose shared memory fits ``max_shared`` bytes.

    Starts from the block that keeps the tile in registers (64 positions up to C=256,
    32 up to 512, else 16) and three stages; gives up a stage first, then positions (one
    stage saves nothing over two: see ``shared_memory_bytes``).

    Raises:
        ValueError: not even 16 positions in one stage fit (``C`` too wide for the chip).
    """
    first = block_n or (64 if block_c <= 256 else 32 if block_c <= 512 else 16)
    blocks = [first] if block_n else [b for b in (64, 32, 16) if b <= first]
    for bn in blocks:
        for stages in (3, 2):
            if shared_memory_bytes(bn, block_c, block_s, h, elsize, stages) <= max_shared:
                return bn, stages
    need = shared_memory_bytes(blocks[-1], block_c, block_s, h, elsize, 2)
    raise ValueError(
        f"tokenlearner_triton: C={block_c}, H={h} need {need} bytes of shared memory at "
        f"block_n={blocks[-1]}, more than the device's {max_shared}"
    )


def max_shared_memory(device: torch.device) -> int:
    """Shared memory one program may use on ``device`` (the interpreter has no limit)."""
    if device.type != "cuda":
        return 1 << 30
    props = torch.cuda.get_device_properties(device)
    # The opt-in limit (227 KB on an H100, as Triton reported it); 48 KB is every chip's floor.
    return int(getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024)


def default_num_splits(batch: int, n: int, block_n: int, device: torch.device) -> int:
    """Slices of N per batch element so that ``batch * splits`` programs fill the GPU.

    Aim at two programs per SM; a batch already that large needs no split (and
    no combine pass). On CPU (the interpreter) there is nothing to fill: 1.
    """
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(_cdiv(2 * sms, batch), _cdiv(n, block_n), MAX_SPLITS))


def tokenlearner_triton(
    x: Tensor,
    cond_bias: Tensor | None,
    w: TokenLearnerWeights,
    *,
    num_splits: int | None = None,
    block_n: int | None = None,
    precision: str | None = None,
) -> Tensor:
    """Fused TokenLearner forward with the Triton kernels: ``z [B, S, C]``.

    Args:
        x: features ``[B, N, C]`` (fp32, fp16 or bf16; last dim contiguous).
        cond_bias: ``[B, C]`` added to every position after the LayerNorm, or None.
        w: ``TokenLearnerWeights`` (``ln_weight [C]``, ``ln_bias [C]``, ``w1 [H, C]``,
            ``b1 [H]``, ``w2 [S, H]``, ``b2 [S]``); H a power of two >= 16.
        num_splits: slices of N per batch element (>1 runs the combine kernel);
            None picks :func:`default_num_splits`.
        block_n: positions per inner step (power of two >= 16); None picks by C and
            by the device's shared memory (:func:`launch_config`).
        precision: fp32 matmul precision, ``"ieee"`` or ``"tf32"``; None follows
            ``torch.backends.cuda.matmul.allow_tf32`` as the reference's matmuls
            do. Ignored for fp16/bf16 inputs.

    Returns:
        ``z [B, S, C]`` in the dtype of ``x``.

    Raises:
        ValueError: an input has the wrong shape, dtype or device, or an option is invalid.
        RuntimeError: Triton is missing, or ``x`` is on CPU without the interpreter.
    """
    B, N, C, S, H = check_tokenlearner_inputs(x, cond_bias, w)
    if not triton_available():
        raise RuntimeError("tokenlearner_triton: the triton package is not installed")
    if x.device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            "tokenlearner_triton: x is on CPU; Triton needs a CUDA tensor, or "
            "TRITON_INTERPRET=1 set before cotok_edge.kernels._triton_kernels is imported"
        )
    if H < 16 or H & (H - 1):
        raise ValueError(f"w.w1: expected [H, C] with H a power of two >= 16, got H={H}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    block_c = max(16, _next_pow2(C))
    block_s = max(16, _next_pow2(S))
    if block_n is not None and (block_n < 16 or block_n & (block_n - 1)):
        raise ValueError(f"block_n: expected a power of two >= 16, got {block_n}")
    block_n, num_stages = launch_config(
        block_c, block_s, H, x.element_size(), max_shared_memory(x.device), block_n
    )
    if num_splits is None:
        num_splits = default_num_splits(B, N, block_n, x.device)
    if not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits: expected 1..{MAX_SPLITS}, got {num_splits}")
    if x.dtype == torch.float32:
        if precision is None:
            precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
        if precision not in ("ieee", "tf32"):
            raise ValueError(f"precision: expected 'ieee' or 'tf32', got {precision!r}")
    else:
        precision = None

    # Cut N into slices of whole blocks; every slice (and every block in it)
    # then holds at least one real position, which the online softmax needs.
    split_len = _cdiv(_cdiv(N, num_splits), block_n) * block_n
    num_splits = _cdiv(N, split_len)

    from . import _triton_kernels as K

    x = x if x.stride(-1) == 1 else x.contiguous()
    cb = None if cond_bias is None else cond_bias.contiguous()
    lnw, lnb, w1, b1, w2, b2 = (t.contiguous() for t in w)
    z = torch.empty((B, S, C), device=x.device, dtype=x.dtype)
    single = num_splits == 1
    if single:
        m = l_ = acc = z  # unused by the kernel when SINGLE_SPLIT
    else:
        m = torch.empty((B, num_splits, S), device=x.device, dtype=torch.float32)
        l_ = torch.empty_like(m)
        acc = torch.empty((B, num_splits, S, C), device=x.device, dtype=torch.float32)
    K.tokenlearner_fwd_kernel[(B, num_splits)](
        x, x if cb is None else cb, lnw, lnb, w1, b1, w2, b2,
        z, m, l_, acc,
        N, C, S, split_len, num_splits,
        x.stride(0), x.stride(1), 0 if cb is None else cb.stride(0),
        LN_EPS,
        HAS_COND=cb is not None, SINGLE_SPLIT=single, H=H,
        BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_S=block_s, DOT_PRECISION=precision,
        num_warps=4 if block_c <= 256 else 8, num_stages=num_stages,
    )  # fmt: skip
    if not single:
        block_c2 = min(block_c, 256)
        K.tokenlearner_combine_kernel[(B, S, _cdiv(C, block_c2))](
            m, l_, acc, z, C, S, num_splits,
            BLOCK_K=max(2, _next_pow2(num_splits)), BLOCK_C=block_c2, num_warps=4,
        )  # fmt: skip
    return z


# --- torch custom op -----------------------------------------------------------------


@torch.library.custom_op("cotok::tokenlearner_fused", mutates_args=())
def tokenlearner_fused(
    x: Tensor,
    cond_bias: Tensor | None,
    ln_weight: Tensor,
    ln_bias: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
) -> Tensor:
    """Fused TokenLearner ``z [B, S, C]`` from ``x [B, N, C]`` (weights as in TokenLearnerWeights).

    Default kernel, for every device without a faster one: the reference.
    """
    w = TokenLearnerWeights(ln_weight, ln_bias, w1, b1, w2, b2)
    check_tokenlearner_inputs(x, cond_bias, w)
    return tokenlearner_reference(x, cond_bias, w)[0]


@tokenlearner_fused.register_kernel("cuda")
def _tokenlearner_fused_cuda(
    x: Tensor,
    cond_bias: Tensor | None,
    ln_weight: Tensor,
    ln_bias: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
) -> Tensor:
    w = TokenLearnerWeights(ln_weight, ln_bias, w1, b1, w2, b2)
    if triton_available():
        return tokenlearner_triton(x, cond_bias, w)
    check_tokenlearner_inputs(x, cond_bias, w)
    return tokenlearner_reference(x, cond_bias, w)[0]


@tokenlearner_fused.register_fake
def _tokenlearner_fused_fake(
    x: Tensor,
    cond_bias: Tensor | None,
    ln_weight: Tensor,
    ln_bias: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
) -> Tensor:
    check_tokenlearner_inputs(x, cond_bias, TokenLearnerWeights(ln_weight, ln_bias, w1, b1, w2, b2))
    return x.new_empty((x.shape[0], w2.shape[0], x.shape[2]))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (torch.library's protocol)
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_z: Tensor):  # noqa: ANN001, ANN202
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad
    leaves = [
        None if t is None else t.detach().requires_grad_(bool(need))
        for t, need in zip(saved, needs, strict=True)
    ]
    wanted = [t for t, need in zip(leaves, needs, strict=True) if t is not None and need]
    grads: list[Tensor | None] = [None] * len(leaves)
    if wanted:
        with torch.enable_grad():
            x, cb, *ws = leaves
            z, _ = tokenlearner_reference(x, cb, TokenLearnerWeights(*ws))
            got = iter(torch.autograd.grad(z, wanted, grad_z, allow_unused=True))
        for i, (t, need) in enumerate(zip(leaves, needs, strict=True)):
            if t is not None and need:
                grads[i] = next(got)
    return tuple(grads)


tokenlearner_fused.register_autograd(_backward, setup_context=_setup_context)


# --- model dispatch ------------------------------------------------------------------


def _call_op(x: Tensor, cond_bias: Tensor | None, w: TokenLearnerWeights) -> Tensor:
    return torch.ops.cotok.tokenlearner_fused(x, cond_bias, *w)


def fused_applies(x: Tensor) -> bool:
    """Whether the fused op should replace the reference for ``x``: CUDA and Triton present."""
    return x.is_cuda and triton_available()


def enable_fused_tokenlearner() -> None:
    """Make every ``TokenLearner`` use the fused op on CUDA (when Triton is installed).

    Registers with ``cotok_edge.model.tokenlearner.register_fused``; elsewhere,
    and whenever the maps are asked for, the reference still runs. Calling it
    again is harmless. ``clear_fused()`` undoes it.
    """
    from ._dispatch import ensure_registered

    ensure_registered()
    from ._dispatch import STATE

    STATE.cuda_enabled = True
