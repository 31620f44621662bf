"""T5-style transformer parts: RMSNorm, relative position bias, attention, gated FF.

Pre-norm layers without biases in the projections, a bucketed relative
position bias shared by the layers of one stack (T5), and the gated-GELU
feed-forward of T5 v1.1. The text encoder, the co-tokenization layers and
the answer decoder are all built from these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TextConfig


class RMSNorm(nn.Module):
    """T5's LayerNorm: scale only, no mean subtraction; ``[..., D]`` in and out."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # fp32 statistics: the mean of squares overflows fp16 for large activations.
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight


def relative_position_buckets(
    q_len: int, k_len: int, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5 bucket index ``[q_len, k_len]`` of the offset ``key_pos - query_pos``.

    Half the buckets hold exact offsets up to ``num_buckets // 2``, the rest are
    log-spaced up to ``max_distance``; bidirectional stacks split the buckets
    between the two signs.
    """
    offset = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    bucket = torch.zeros_like(offset)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (offset > 0).long() * num_buckets
        dist = offset.abs()
    else:
        dist = (-offset).clamp(min=0)
    exact = num_buckets // 2
    log_ratio = torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = exact + (log_ratio * (num_buckets - exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(dist < exact, dist, far)


class RelativePositionBias(nn.Module):
    """Learnt per-head bias ``[1, H, Lq, Lk]`` from bucketed relative offsets."""

    def __init__(
        self, heads: int, max_len: int, bidirectional: bool, num_buckets: int, max_distance: int
    ):
        super().__init__()
        self.embed = nn.Embedding(num_buckets, heads)
        # Static table so exported graphs hold a constant, not the log arithmetic.
        table = relative_position_buckets(
            max_len, max_len, bidirectional, num_buckets, max_distance
        )
        self.register_buffer("buckets", table, persistent=False)

    def forward(self, q_len: int, k_len: int) -> Tensor:
        if q_len > self.buckets.shape[0] or k_len > self.buckets.shape[1]:
            raise ValueError(
                f"relative position bias: lengths ({q_len}, {k_len}) exceed the table "
                f"{tuple(self.buckets.shape)}"
            )
        return self.embed(self.buckets[:q_len, :k_len]).permute(2, 0, 1).unsqueeze(0)


def attention_mask(key_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Additive mask ``[B, 1, 1, Lk]`` from a key mask ``[B, Lk]`` (True = attend)."""
    if key_mask is None:
        return None
    # A finite minimum, not -inf: a fully padded row then softmaxes to uniform, not NaN.
    neg = torch.finfo(dtype).min
    return torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill(
        ~key_mask, neg
    )[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention without projection biases.

    ``x [B, Lq, D]``, ``memory [B, Lk, D]`` (self-attention when None),
    ``bias`` additive ``[B or 1, H or 1, Lq, Lk]`` -> ``[B, Lq, D]``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        mem = x if memory is None else memory
        b, lq, d = x.shape
        h = self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(b, -1, h, d // h).transpose(1, 2)  # [B, H, L, Dh]

        q, k, v = split(self.q(x)), split(self.k(mem)), split(self.v(mem))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.o(out.transpose(1, 2).reshape(b, lq, d))


class GatedFeedForward(nn.Module):
    """T5 v1.1 feed-forward: ``wo(gelu(wi_0 x) * wi_1 x)``; ``[B, L, D]`` in and out."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.wi_0 = nn.Linear(dim, hidden, bias=False)
        self.wi_1 = nn.Linear(dim, hidden, bias=False)
        self.wo = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(self.drop(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward; ``[B, L, D]`` in and out."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = RMSNorm(dim)
        self.ff = GatedFeedForward(dim, ff_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), bias=bias))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm2 = RMSNorm(dim)
        self.cross_attn = Attention(dim, heads, dropout)
        self.norm3 = RMSNorm(dim)
        self.ff = GatedFeedForward(dim, ff_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, y: Tensor, memory: Tensor, self_bias: Tensor, cross_bias: Tensor | None):
        y = y + self.drop(self.self_attn(self.norm1(y), bias=self_bias))
        y = y + self.drop(self.cross_attn(self.norm2(y), memory, bias=cross_bias))
        return y + self.drop(self.ff(self.norm3(y)))


class TextEncoder(nn.Module):
    """T5-style encoder over question tokens.

    ``embedded [B, L, D_text]``, ``mask [B, L]`` (True = token) -> ``[B, L, D_text]``.
    The token embedding lives in the parent model (shared with the decoder).
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.pos_bias = RelativePositionBias(
            cfg.heads, cfg.max_question_tokens, True, cfg.relative_buckets,
            cfg.relative_max_distance,
        )  # fmt: skip
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.dim, cfg.heads, cfg.ff_dim, cfg.dropout)
            for _ in range(cfg.encoder_layers)
        )
        self.norm = RMSNorm(cfg.dim)

    def forward(self, embedded: Tensor, mask: Tensor) -> Tensor:
        length = embedded.shape[1]
        pad = attention_mask(mask, embedded.dtype)
        bias = self.pos_bias(length, length).to(embedded.dtype) + pad
        x = embedded
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)


class AnswerDecoder(nn.Module):
    """T5-style decoder at width ``dim``.

    Answer prefix ``[B, A, dim]`` and memory ``[B, M, dim]`` -> ``[B, A, dim]``.

    It runs at the unified width d (not the text encoder's) so it reads the
    co-tokenizer's output without another projection.
    """

    def __init__(self, cfg: TextConfig, dim: int):
        super().__init__()
        self.pos_bias = RelativePositionBias(
            cfg.heads, cfg.max_answer_tokens + 1, False, cfg.relative_buckets,
            cfg.relative_max_distance,
        )  # fmt: skip
        self.layers = nn.ModuleList(
            DecoderLayer(dim, cfg.heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.decoder_layers)
        )
        self.norm = RMSNorm(dim)

    def forward(self, embedded: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        length = embedded.shape[1]
        neg = torch.finfo(embedded.dtype).min
        causal = torch.full((length, length), neg, dtype=embedded.dtype, device=embedded.device)
        self_bias = self.pos_bias(length, length).to(embedded.dtype) + causal.triu(1)
        cross_bias = attention_mask(memory_mask, embedded.dtype)
        y = embedded
        for layer in self.layers:
            y = layer(y, memory, self_bias, cross_bias)
        return self.norm(y)
