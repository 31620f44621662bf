"""Input validation shared by every fused TokenLearner entry point.

Each kernel (Triton, CUDA via ctypes, the torch custom op) takes the same
arguments as :func:`cotok_edge.model.tokenlearner.tokenlearner_reference`; a
wrong shape must fail here with a message that names the input and the shape
it should have, not deep inside a kernel launch.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from .reference import TokenLearnerWeights


class TokenLearnerDims(NamedTuple):
    """Sizes of one TokenLearner call: batch B, positions N, width C, maps S, hidden H."""

    B: int
    N: int
    C: int
    S: int
    H: int


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_tokenlearner_inputs(
    x: Tensor, cond_bias: Tensor | None, w: TokenLearnerWeights
) -> TokenLearnerDims:
    """Validate the arguments of a TokenLearner call and return its sizes.

    Expected: ``x [B, N, C]``, ``cond_bias [B, C]`` or None, ``w.ln_weight [C]``,
    ``w.ln_bias [C]``, ``w.w1 [H, C]``, ``w.b1 [H]``, ``w.w2 [S, H]``, ``w.b2 [S]``,
    all floating point and on the device of ``x``.

    Raises:
        ValueError: naming the first input whose shape, dtype or device is wrong.
    """
    if not isinstance(w, TokenLearnerWeights):
        raise ValueError(f"w: expected a TokenLearnerWeights, got {type(w).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x: expected shape [B, N, C], got {_shape(x)}")
    B, N, C = x.shape
    if B < 1 or N < 1 or C < 1:
        raise ValueError(f"x: expected non-empty [B, N, C], got {_shape(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating point tensor, got {x.dtype}")
    if w.w1.dim() != 2 or w.w2.dim() != 2:
        raise ValueError(
            f"w.w1, w.w2: expected [H, C] and [S, H], got {_shape(w.w1)} and {_shape(w.w2)}"
        )
    H, S = w.w1.shape[0], w.w2.shape[0]
    expected = {
        "cond_bias": (cond_bias, (B, C), "[B, C]"),
        "w.ln_weight": (w.ln_weight, (C,), "[C]"),
        "w.ln_bias": (w.ln_bias, (C,), "[C]"),
        "w.w1": (w.w1, (H, C), "[H, C]"),
        "w.b1": (w.b1, (H,), "[H]"),
        "w.w2": (w.w2, (S, H), "[S, H]"),
        "w.b2": (w.b2, (S,), "[S]"),
    }
    for name, (t, shape, symbolic) in expected.items():
        if t is None:
            if name == "cond_bias":
                continue
            raise ValueError(f"{name}: expected a tensor of shape {symbolic}, got None")
        if tuple(t.shape) != shape:
            want = "[" + ", ".join(str(d) for d in shape) + "]"
            raise ValueError(f"{name}: expected shape {symbolic} = {want}, got {_shape(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating point tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (that of x), got {t.device}")
    return TokenLearnerDims(B, N, C, S, H)
