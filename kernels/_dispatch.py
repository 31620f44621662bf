"""The one registration of the fused op with the model's TokenLearner dispatcher.

``cotok_edge.model.tokenlearner`` keeps a list of (applies, impl) pairs and has
no way to remove a single entry, so this package registers exactly one entry
(once: re-registering would move it behind entries added later) and switches
it with flags: ``cuda_enabled`` (set by
``enable_fused_tokenlearner``) routes CUDA inputs through the op, and
``export_depth`` (held by ``onnx_plugin.export_tokenlearner_as_plugin``) routes
every input through it so an ONNX export records one op per TokenLearner call.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from cotok_edge.model import tokenlearner as _tl

from .reference import TokenLearnerWeights


@dataclass
class _State:
    cuda_enabled: bool = False
    export_depth: int = 0


STATE = _State()


def _applies(x: Tensor) -> bool:
    if STATE.export_depth > 0:
        return True
    from .triton_tokenlearner import fused_applies

    return STATE.cuda_enabled and fused_applies(x)


def _impl(x: Tensor, cond_bias: Tensor | None, w: TokenLearnerWeights) -> Tensor:
    from .triton_tokenlearner import _call_op

    return _call_op(x, cond_bias, w)


def _registered() -> bool:
    return any(impl is _impl for impl in _tl.registered_fused())


def ensure_registered() -> None:
    """Register the dispatch entry unless it is already in the model's list."""
    if not _registered():
        _tl.register_fused(_applies, _impl)
