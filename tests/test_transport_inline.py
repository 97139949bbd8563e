"""The CPU transport of small activations runs inline, block by block: same results as the
whole-tensor ops (and the worker-thread kernel still runs for large ones)."""

from __future__ import annotations

import importlib

import pytest
import torch

from act_core import TransportMap, transport
from act_core._fast import kernels
from act_core.transport import transport_channels

transport_module = importlib.import_module("act_core.transport")  # the name is also a function


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    """Inline blocks are used only with several torch threads (one thread: whole-tensor ops)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)


def _map(d: int, scale: float | None = None) -> TransportMap:
    generator = torch.Generator().manual_seed(d)
    levels = torch.linspace(-1.0, 1.0, 13).unsqueeze(1).expand(13, d).contiguous()
    omega = (torch.full((d,), scale) if scale is not None
             else 0.5 + torch.rand(d, generator=generator))
    return TransportMap(scale=omega, shift=torch.randn(d, generator=generator),
                        lo=levels[0].clone(), hi=levels[-1].clone(), quantiles=levels)


def _whole(monkeypatch, fn):
    with monkeypatch.context() as patch:
        patch.setattr(transport_module, "INLINE_ELEMENTS", 0)  # every op on the whole tensor
        return fn()


def test_one_thread_uses_whole_tensor_ops(monkeypatch):
    x = torch.randn(4, 77, 320)
    assert transport_module._inline_step(x, 320) is not None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert transport_module._inline_step(x, 320) is None


@pytest.mark.parametrize("support", ["unbounded", "minmax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tokens_inline_blocks_equal_whole_tensor_ops(monkeypatch, support, dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 77, 320).to(dtype)  # 98560 values: inline, in 4 blocks
    assert kernels.BLOCK_ELEMENTS < x.numel() <= transport_module.INLINE_ELEMENTS
    tmap = _map(320)
    for strength in (0.7, torch.tensor([0.0, 1.0, 0.5, 0.0])):
        inline = transport(x, tmap, strength, support)
        whole = _whole(monkeypatch, lambda s=strength: transport(x, tmap, s, support))
        assert inline.dtype == dtype and torch.equal(inline, whole)


@pytest.mark.parametrize("support", ["unbounded", "minmax"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_channels_inline_blocks_equal_whole_tensor_ops(monkeypatch, support, scale):
    torch.manual_seed(0)
    x = torch.randn(8, 320, 8, 8) * 0.3 + torch.randn(8, 320, 1, 1) * 0.5  # 163840 values
    tmap = _map(320, scale)
    for strength in (1.0, torch.tensor([1.0, 0.0] * 4)):
        inline = transport_channels(x, tmap, strength, support)
        whole = _whole(monkeypatch, lambda s=strength: transport_channels(x, tmap, s, support))
        torch.testing.assert_close(inline, whole, rtol=0, atol=1e-6)
        lam = strength if isinstance(strength, torch.Tensor) else torch.full((8,), strength)
        assert torch.equal(inline[lam == 0], x[lam == 0])  # strength-0 items: bit for bit


def test_pure_shift_channel_maps_shift_every_value():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    tmap = _map(6, 1.0)
    out = transport_channels(x, tmap, 0.5, "unbounded")
    torch.testing.assert_close(out, x + 0.5 * tmap.shift.reshape(1, 6, 1, 1))


def test_large_tensors_use_the_worker_threads_under_inference_mode(monkeypatch):
    """Above INLINE_ELEMENTS the bounded kernel spreads blocks over worker threads; they must
    run under the caller's inference mode (thread-local), as ComfyUI samples under it."""
    monkeypatch.setattr(transport_module, "INLINE_ELEMENTS", 0)
    torch.manual_seed(0)
    tmap = _map(256)
    with torch.inference_mode():
        x = torch.randn(512, 256)
        y = transport(x, tmap, 0.5, "minmax")
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 256 * 512)  # one block: no workers
    assert torch.equal(y, transport(x.clone(), tmap, 0.5, "minmax"))


def test_tensors_that_require_grad_take_the_whole_tensor_path():
    x = torch.randn(4, 77, 320, requires_grad=True)
    y = transport(x, _map(320), 0.5, "unbounded")
    y.sum().backward()
    assert x.grad is not None
