"""Text-conditioned TokenLearner (V1.1), the one place its math lives.

TokenLearner V1.1 (Ryoo et al. 2021, as in scenic): for features ``x [B, N, C]``
over the N space-time positions of one stream, attention logits come from
``MLP(LN(x))`` with ``MLP = Dense(64) -> GELU -> Dense(S)``, a softmax over N
turns them into S maps ``a [B, S, N]``, and the tokens are ``z = a @ x``
``[B, S, C]``. The LayerNorm feeds only the maps; the pooling uses ``x`` as is.

Co-tokenization conditions the maps on text (FiLM-style, see PAPER.md): a
per-question bias ``b [B, C]`` (the projected conditioning vector) is added to
every *normalised* position, so the logits are ``MLP(LN(x) + b)``. Adding it
after the LayerNorm keeps the text's pull the same whatever the scale of the
video features, and it splits the work: ``Dense(64)(LN(x))`` depends on the
clip only, ``Dense(64)(b)`` on the question only. Training asks several
questions about each clip over K steps, so :meth:`TokenLearner.clip_hidden`
computes the clip part once and :meth:`TokenLearner.pool_questions` adds each
question's part (the same numbers as the reference, 4-17x cheaper per step).

With ``pool="max"`` (``StreamConfig.token_pool``) the maps are sigmoid gates
instead of a softmax and each token is the channel-wise max over the gated
positions, ``z[s, c] = max_n a[s, n] x[n, c]`` (:func:`tokenlearner_max`): a
softmax average gives a 12-pixel object its share of the positions until the map
has found it, and the map gets its gradient at every position in proportion to
that share; the max sees the object at full strength from the start and sends the
map's gradient to the position it picked. No fused kernel implements it.

``tokenlearner_reference`` is the functional definition that every fused kernel
(``cotok_edge.kernels``) must match. ``TokenLearner`` holds the parameters and
dispatches to a fused implementation when one is registered and applicable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TOKEN_POOLS

LN_EPS = 1e-6


class TokenLearnerWeights(NamedTuple):
    """Parameters of one TokenLearner, as plain tensors (what a kernel takes).

    ln_weight, ln_bias: ``[C]``; w1: ``[H, C]``; b1: ``[H]``; w2: ``[S, H]``;
    b2: ``[S]`` (nn.Linear layout: out x in). H is the MLP hidden width (64).
    """

    ln_weight: Tensor
    ln_bias: Tensor
    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor


def tokenlearner_logits(x: Tensor, cond_bias: Tensor | None, w: TokenLearnerWeights) -> Tensor:
    """Attention logits ``[B, S, N]`` for features ``x [B, N, C]``.

    ``cond_bias [B, C]`` (or None) is added to every position after the
    LayerNorm.
    """
    # normalized_shape from the weight: a constant in exported graphs even when B, N are dynamic.
    h = F.layer_norm(x, tuple(w.ln_weight.shape), w.ln_weight, w.ln_bias, LN_EPS)
    if cond_bias is not None:
        h = h + cond_bias[:, None, :]
    h = F.gelu(F.linear(h, w.w1, w.b1))  # [B, N, H]
    return F.linear(h, w.w2, w.b2).transpose(1, 2)  # [B, S, N]


def tokenlearner_reference(
    x: Tensor,
    cond_bias: Tensor | None,
    w: TokenLearnerWeights,
    return_maps: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The reference TokenLearner: ``z [B, S, C]`` and, if asked, ``a [B, S, N]``.

    Softmax is taken in float32 whatever the input dtype, then the weighted sum
    runs in the input dtype (as the fused kernels do, with fp32 accumulation).
    """
    logits = tokenlearner_logits(x, cond_bias, w)
    a = torch.softmax(logits.float(), dim=-1).to(x.dtype)  # [B, S, N]
    z = torch.bmm(a, x)  # [B, S, C]
    return z, (a if return_maps else None)


def gated_max(logits: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Gates ``a = sigmoid(logits)`` ``[..., S, N]`` and tokens ``z = max_n a[..., n] x[n]``.

    ``x [..., N, C]`` broadcasts against the gates' leading dims; ``z [..., S, C]``. The
    sigmoid runs in float32 whatever the input dtype, as the softmax does.
    """
    a = torch.sigmoid(logits.float()).to(x.dtype)
    return (a.unsqueeze(-1) * x.unsqueeze(-3)).amax(-2), a  # [..., S, N, C] -> max over N


def tokenlearner_max(
    x: Tensor, cond_bias: Tensor | None, w: TokenLearnerWeights, return_maps: bool = False
) -> tuple[Tensor, Tensor | None]:
    """The max-pooling TokenLearner: ``z [B, S, C]`` and, if asked, gates ``a [B, S, N]``.

    ``a = sigmoid(logits)`` (each in (0, 1), no sum over N), ``z = max_n a[:, :, n] x[:, n]``.
    """
    z, a = gated_max(tokenlearner_logits(x, cond_bias, w), x)
    return z, (a if return_maps else None)


# A fused implementation takes the same arguments as the reference and returns
# z (it is only called when maps are not asked for). ``applies`` says whether
# it can run on the given input (device, dtype, shape).
FusedImpl = Callable[[Tensor, "Tensor | None", TokenLearnerWeights], Tensor]
_fused: list[tuple[Callable[[Tensor], bool], FusedImpl]] = []


def register_fused(applies: Callable[[Tensor], bool], impl: FusedImpl) -> None:
    """Register a fused forward used in place of the reference when ``applies(x)``.

    Registering the same ``impl`` again replaces its entry (so it is safe to call twice).
    """
    _fused[:] = [(a, i) for a, i in _fused if i is not impl]
    _fused.append((applies, impl))


def registered_fused() -> list[FusedImpl]:
    """The registered fused implementations, in the order they are tried."""
    return [impl for _, impl in _fused]


def clear_fused() -> None:
    """Forget every registered fused implementation (the reference runs again)."""
    _fused.clear()


def tokenlearner(
    x: Tensor,
    cond_bias: Tensor | None,
    w: TokenLearnerWeights,
    return_maps: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Dispatching TokenLearner: a registered fused kernel where it applies.

    The maps are only produced by the reference: asking for them (the
    explanation path) always takes it, so the fast path never writes them.
    """
    if not return_maps:
        for applies, impl in _fused:
            if applies(x):
                return impl(x, cond_bias, w), None
    return tokenlearner_reference(x, cond_bias, w, return_maps)


class TokenLearner(nn.Module):
    """Text-conditioned TokenLearner V1.1 over one stream.

    Args:
        dim: feature width C of ``x`` (the unified width d).
        num_tokens: S, tokens learnt per call.
        hidden: MLP hidden width (64 in V1.1).
        cond_dim: width of the conditioning vector ``c``; it is projected to
            ``dim`` and added to every normalised position.
        pool: ``softmax`` (V1.1, fused kernels where registered) or ``max``
            (:func:`tokenlearner_max`).
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        hidden: int = 64,
        cond_dim: int | None = None,
        pool: str = "softmax",
    ):
        super().__init__()
        if pool not in TOKEN_POOLS:
            raise ValueError(f"TokenLearner: pool {pool!r} is not one of {TOKEN_POOLS}")
        self.pool = pool
        self.cond_proj = nn.Linear(cond_dim or dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, num_tokens)

    def weights(self) -> TokenLearnerWeights:
        return TokenLearnerWeights(
            self.norm.weight, self.norm.bias, self.fc1.weight, self.fc1.bias,
            self.fc2.weight, self.fc2.bias,
        )  # fmt: skip

    def forward(
        self, x: Tensor, cond: Tensor | None = None, return_maps: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``x [B, N, C]``, ``cond [B, cond_dim]`` -> ``z [B, S, C]``, maps ``[B, S, N]``/None."""
        cond_bias = None if cond is None else self.cond_proj(cond)
        if self.pool == "max":
            return tokenlearner_max(x, cond_bias, self.weights(), return_maps)
        return tokenlearner(x, cond_bias, self.weights(), return_maps)

    def clip_hidden(self, x: Tensor) -> Tensor:
        """The question-independent part of the MLP: ``x [..., N, dim]`` -> ``[..., N, hidden]``.

        ``Dense(64)(LN(x))`` before the GELU; computed once per clip and reused by
        every question and step through :meth:`pool_questions`.
        """
        return self.fc1(self.norm(x))

    def pool_questions(
        self, x: Tensor, hidden: Tensor, cond: Tensor, return_maps: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Tokens for Q questions about each of C clips: the numbers :meth:`forward` gives.

        ``x [C, G, n, dim]`` clip features (G time slices of n positions),
        ``hidden [C, G, n, hidden]`` from :meth:`clip_hidden`, ``cond [C, Q,
        cond_dim]`` -> ``z [C, Q, G, S, dim]`` and, if asked, maps ``[C, Q, G, S, n]``.
        """
        c, g, n, dim = x.shape
        q = cond.shape[1]
        # fc1(LN(x) + b) = fc1(LN(x)) + W1 b: the question adds a bias in the hidden width.
        q_hidden = F.linear(self.cond_proj(cond), self.fc1.weight)  # [C, Q, hidden]
        h = F.gelu(hidden[:, None] + q_hidden[:, :, None, None, :])  # [C, Q, G, n, hidden]
        logits = self.fc2(h).transpose(-1, -2)  # [C, Q, G, S, n]
        if self.pool == "max":
            z, a = gated_max(logits, x[:, None])  # x as [C, 1, G, n, dim] for the Q questions
            return z, (a if return_maps else None)
        a = torch.softmax(logits.float(), dim=-1).to(x.dtype)
        s = a.shape[3]
        # One matmul per (clip, slice) over all its questions' maps: x is never copied.
        a_cg = a.transpose(1, 2).reshape(c * g, q * s, n)
        z = torch.bmm(a_cg, x.reshape(c * g, n, dim)).reshape(c, g, q, s, dim).transpose(1, 2)
        return z, (a if return_maps else None)
