"""The ``cotok::tokenlearner_fused`` custom op and its registration with the model (CPU).

On CPU the op runs its default kernel (the reference), so these tests check
the parts that do not need a GPU: the op's schema, fake (meta) kernel and
autograd formula, and when the model's TokenLearner dispatches to it.
"""

from __future__ import annotations

import pytest
import torch
from cotok_edge.kernels import _dispatch
from cotok_edge.kernels.reference import TokenLearnerWeights, tokenlearner_reference
from cotok_edge.kernels.triton_tokenlearner import (
    enable_fused_tokenlearner,
    fused_applies,
    tokenlearner_fused,
)

from cotok_edge.model import tokenlearner as tl_model


def _args(B=2, N=7, C=8, S=3, H=64, dtype=torch.float64, cond=True, grad=False):
    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_(grad)

    ws = [t(C, scale=0.1), t(C, scale=0.1), t(H, C, scale=C**-0.5), t(H)]
    ws += [t(S, H, scale=H**-0.5), t(S)]
    return t(B, N, C), (t(B, C) if cond else None), ws


@pytest.mark.parametrize("cond", [True, False])
def test_opcheck(cond):
    """Schema, fake kernel, autograd registration and AOT dispatch are consistent."""
    x, cb, ws = _args(cond=cond, grad=True)
    result = torch.library.opcheck(tokenlearner_fused, (x, cb, *ws))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_cpu_kernel_is_the_reference():
    x, cb, ws = _args()
    z = torch.ops.cotok.tokenlearner_fused(x, cb, *ws)
    z_ref, _ = tokenlearner_reference(x, cb, TokenLearnerWeights(*ws))
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)


@pytest.mark.parametrize("cond", [True, False])
def test_backward_equals_reference_gradients(cond):
    x, cb, ws = _args(cond=cond, grad=True)
    inputs = [x, *([cb] if cond else []), *ws]
    g = torch.randn(2, 3, 8, dtype=torch.float64)
    z_ref, _ = tokenlearner_reference(x, cb, TokenLearnerWeights(*ws))
    ref = torch.autograd.grad(z_ref, inputs, g)
    got = torch.autograd.grad(torch.ops.cotok.tokenlearner_fused(x, cb, *ws), inputs, g)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_export_records_the_op():
    """torch.export sees one op call (the fake kernel gives it its shape)."""

    class M(torch.nn.Module):
        def forward(self, x, cb, *ws):
            return torch.ops.cotok.tokenlearner_fused(x, cb, *ws)

    x, cb, ws = _args(dtype=torch.float32)
    ep = torch.export.export(M(), (x, cb, *ws))
    calls = [n for n in ep.graph.nodes if n.target is torch.ops.cotok.tokenlearner_fused.default]
    assert len(calls) == 1
    assert tuple(calls[0].meta["val"].shape) == (2, 3, 8)


def test_bad_shape_raises_value_error_naming_input():
    x, cb, ws = _args()
    with pytest.raises(ValueError, match=r"cond_bias: expected shape \[B, C\]"):
        torch.ops.cotok.tokenlearner_fused(x, cb[:1], *ws)


@pytest.fixture
def clean_dispatch():
    tl_model.clear_fused()
    saved = (_dispatch.STATE.cuda_enabled, _dispatch.STATE.export_depth)
    yield
    tl_model.clear_fused()
    _dispatch.STATE.cuda_enabled, _dispatch.STATE.export_depth = saved


def test_enable_registers_once_and_cpu_keeps_the_reference(clean_dispatch, monkeypatch):
    enable_fused_tokenlearner()
    enable_fused_tokenlearner()
    assert sum(impl is _dispatch._impl for impl in tl_model.registered_fused()) == 1
    x, _, _ = _args(dtype=torch.float32)
    assert not fused_applies(x)  # CPU tensor
    calls = []
    monkeypatch.setattr(_dispatch, "_impl", lambda *a: calls.append(a))
    layer = tl_model.TokenLearner(8, 3)
    z, maps = layer(x)
    assert calls == [] and maps is None and z.shape == (2, 3, 8)


def test_enable_routes_cuda_inputs_through_the_op(clean_dispatch, monkeypatch):
    """With a CUDA input (faked: no GPU here) and Triton present, the op replaces the reference."""
    from cotok_edge.kernels import triton_tokenlearner as ttl

    monkeypatch.setattr(ttl, "triton_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    calls = []
    real_call = ttl._call_op
    monkeypatch.setattr(ttl, "_call_op", lambda *a: calls.append(1) or real_call(*a))
    enable_fused_tokenlearner()
    x, cb, ws = _args(dtype=torch.float32)
    assert _dispatch._applies(x)
    z, maps = tl_model.tokenlearner(x, cb, TokenLearnerWeights(*ws))
    assert maps is None and calls == [1]
    torch.testing.assert_close(z, tokenlearner_reference(x, cb, TokenLearnerWeights(*ws))[0])
    # Asking for the maps always takes the reference, which alone writes them.
    _, maps = tl_model.tokenlearner(x, cb, TokenLearnerWeights(*ws), return_maps=True)
    assert maps is not None and maps.shape == (2, 3, 7)
