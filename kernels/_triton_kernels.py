"""Triton kernels of the fused TokenLearner forward (imported lazily).

Kept apart from :mod:`cotok_edge.kernels.triton_tokenlearner` so that importing
the custom op never imports Triton, and so that the interpreter can be chosen
at import time: ``@triton.jit`` decides between compiling and interpreting when
this module is imported, from ``TRITON_INTERPRET`` as it is set then.

Algorithm (one program per batch element and slice of N):
  for each block of BLOCK_N positions of the slice:
      y = LN(x) + cond_bias; u = GELU(y @ W1^T + b1); logits = u @ W2^T + b2
      online softmax over N: running max m and sum l per map, rescale the
      partial tokens acc [S, C] by exp(m_old - m_new) and add p^T @ x
  one slice: z = acc / l; several: write (m, l, acc) and let the combine kernel
  merge the slices. All S maps are done by the same program so x is read from
  memory once; the maps themselves are never written.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _gelu_erf(u):
    # Exact erf GELU, as F.gelu's default; the tanh approximation would drift
    # from the reference by ~1e-4.
    return 0.5 * u * (1.0 + tl.math.erf(u * 0.7071067811865476))


@triton.jit
def tokenlearner_fwd_kernel(
    x_ptr,
    cb_ptr,
    lnw_ptr,
    lnb_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    z_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    N,
    C,
    S,
    split_len,
    num_splits,
    stride_xb,
    stride_xn,
    stride_cbb,
    eps,
    HAS_COND: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr,
    H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_k = tl.program_id(1)
    n_start = pid_k * split_len
    n_end = tl.minimum(n_start + split_len, N)

    offs_c = tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    offs_s = tl.arange(0, BLOCK_S)
    s_mask = offs_s < S
    offs_h = tl.arange(0, H)
    # The matmuls run in the input dtype (tensor cores for fp16/bf16) with fp32
    # accumulation; LayerNorm, GELU and the softmax always run in fp32.
    dt = x_ptr.dtype.element_ty

    gamma = tl.load(lnw_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    beta = tl.load(lnb_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    if HAS_COND:
        cb = tl.load(cb_ptr + pid_b * stride_cbb + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    else:
        cb = tl.zeros([BLOCK_C], dtype=tl.float32)
    # The question's bias is added after the LayerNorm: fold it into beta once.
    beta = beta + cb
    b1 = tl.load(b1_ptr + offs_h).to(tl.float32)
    b2 = tl.load(b2_ptr + offs_s, mask=s_mask, other=0.0).to(tl.float32)
    # W2^T is small ([H, S]) so it stays in registers for the whole slice.
    w2t = tl.load(w2_ptr + offs_s[None, :] * H + offs_h[:, None], mask=s_mask[None, :], other=0.0)
    w2t = w2t.to(dt)

    m_i = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_S], dtype=tl.float32)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    x_base = x_ptr + pid_b * stride_xb
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < n_end
        xb = tl.load(
            x_base + offs_n[:, None] * stride_xn + offs_c[None, :],
            mask=n_mask[:, None] & c_mask[None, :],
            other=0.0,
        )
        h = xb.to(tl.float32)
        mean = tl.sum(h, axis=1) / C
        # Padded channels must not count in the variance (h - mean != 0 there).
        d = tl.where(c_mask[None, :], h - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / C
        rstd = 1.0 / tl.sqrt(var + eps)
        y = d * rstd[:, None] * gamma[None, :] + beta[None, :]
        # W1 ([H, C], up to 128 KiB) is re-read per block from L1/L2 instead of
        # being held in registers across the loop, where it would spill.
        w1t = tl.load(
            w1_ptr + offs_h[None, :] * C + offs_c[:, None], mask=c_mask[:, None], other=0.0
        )
        u = tl.dot(y.to(dt), w1t.to(dt), input_precision=DOT_PRECISION) + b1[None, :]
        u = _gelu_erf(u)
        logits = tl.dot(u.to(dt), w2t, input_precision=DOT_PRECISION) + b2[None, :]
        logits = tl.where(n_mask[:, None], logits, float("-inf"))
        # Every block holds at least one valid position (the launcher cuts N
        # that way), so m_new is finite and exp(-inf - m_new) = 0 on the first.
        m_new = tl.maximum(m_i, tl.max(logits, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(logits - m_new[None, :])
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha[:, None] + tl.dot(tl.trans(p).to(dt), xb, input_precision=DOT_PRECISION)
        m_i = m_new

    sc_mask = s_mask[:, None] & c_mask[None, :]
    if SINGLE_SPLIT:
        z = acc / l_i[:, None]
        z_ptrs = z_ptr + pid_b * S * C + offs_s[:, None] * C + offs_c[None, :]
        tl.store(z_ptrs, z.to(z_ptr.dtype.element_ty), mask=sc_mask)
    else:
        row = (pid_b * num_splits + pid_k) * S
        tl.store(m_ptr + row + offs_s, m_i, mask=s_mask)
        tl.store(l_ptr + row + offs_s, l_i, mask=s_mask)
        tl.store(acc_ptr + (row + offs_s[:, None]) * C + offs_c[None, :], acc, mask=sc_mask)


@triton.jit
def tokenlearner_combine_kernel(
    m_ptr,
    l_ptr,
    acc_ptr,
    z_ptr,
    C,
    S,
    num_splits,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # z[b, s] = sum_k exp(m_k - M) acc_k / sum_k exp(m_k - M) l_k, M = max_k m_k:
    # the same rescaling the online softmax does, applied across slices.
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_c = tl.program_id(2)
    offs_k = tl.arange(0, BLOCK_K)
    k_mask = offs_k < num_splits
    rows = (pid_b * num_splits + offs_k) * S + pid_s
    m = tl.load(m_ptr + rows, mask=k_mask, other=float("-inf"))
    m_max = tl.max(m, axis=0)
    wgt = tl.where(k_mask, tl.exp(m - m_max), 0.0)
    l_sum = tl.sum(wgt * tl.load(l_ptr + rows, mask=k_mask, other=0.0), axis=0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    part = tl.load(
        acc_ptr + rows[:, None] * C + offs_c[None, :],
        mask=k_mask[:, None] & c_mask[None, :],
        other=0.0,
    )
    z = tl.sum(part * wgt[:, None], axis=0) / l_sum
    tl.store(z_ptr + (pid_b * S + pid_s) * C + offs_c, z.to(z_ptr.dtype.element_ty), mask=c_mask)
