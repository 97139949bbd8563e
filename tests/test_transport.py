"""Applying maps to tensors: tokens and channel modes, strengths, supports, dtypes."""

from __future__ import annotations

import logging

import pytest
import torch

from act_core import MapCompatibilityError, StrengthError, TransportMap, fit, transport
from act_core._fast import kernels
from act_core.maps import QUANTILE_LEVELS
from act_core.strength import _warned
from act_core.transport import fold, transport_channels


def _map(d: int = 6, lo: float = -1.0, hi: float = 1.0, **changes) -> TransportMap:
    g = torch.Generator().manual_seed(0)
    levels = torch.tensor(QUANTILE_LEVELS).unsqueeze(1)  # (K, 1)
    quantiles = (lo + (hi - lo) * levels).expand(-1, d).clone()
    fields = dict(scale=torch.rand(d, generator=g) + 0.5, shift=torch.randn(d, generator=g),
                  lo=torch.full((d,), lo), hi=torch.full((d,), hi), quantiles=quantiles)
    fields.update(changes)
    return TransportMap(**fields)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x.view(torch.int16)


def _reference(x, tmap, lam, lo=None, hi=None):
    """(1 - lam) x + lam T(x) inside [lo, hi], x outside."""
    lo = tmap.lo if lo is None else lo
    hi = tmap.hi if hi is None else hi
    moved = (1 - lam) * x + lam * (tmap.scale * x + tmap.shift)
    return torch.where((x >= lo) & (x <= hi), moved, x)


def test_zero_strength_returns_the_input_bit_for_bit():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6)
    x[0, 0, 0], x[0, 0, 1] = -0.0, float("nan")
    tmap = _map()
    assert transport(x, tmap, 0.0) is x
    assert transport(x, tmap, torch.zeros(2)) is x
    feature = torch.randn(2, 6, 4, 4)
    feature[1, 2, 0, 0] = -0.0
    assert transport_channels(feature, tmap, 0) is feature
    out = transport_channels(feature, tmap, torch.tensor([0.0, 1.0]))
    assert torch.equal(_bits(out[0]), _bits(feature[0]))


def test_per_item_zero_strength_copies_those_items_exactly():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6) * 0.5
    x[1, 0, 0], x[1, 0, 1] = -0.0, float("nan")
    tmap = _map()
    out = transport(x, tmap, torch.tensor([1.0, 0.0, 0.5]))
    assert torch.equal(_bits(out[1]), _bits(x[1]))
    torch.testing.assert_close(out[0], transport(x[0], tmap, 1.0))
    torch.testing.assert_close(out[2], transport(x[2], tmap, 0.5))


def test_inside_is_transported_and_outside_is_untouched():
    torch.manual_seed(0)
    x = torch.randn(4, 50, 6) * 2  # about half the values outside [-1, 1]
    x[0, 0, :4] = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan")])
    tmap = _map()
    for lam in (1.0, 0.3, 1.7):
        out = transport(x, tmap, lam)
        inside = (x >= -1) & (x <= 1)
        assert 0.2 < inside.float().mean() < 0.8
        assert torch.equal(_bits(out[~inside]), _bits(x[~inside]))
        torch.testing.assert_close(out[inside], _reference(x, tmap, lam)[inside])
        assert not torch.equal(out[inside], x[inside])


def test_quantile_and_unbounded_supports():
    torch.manual_seed(0)
    x = torch.randn(7, 6)
    tmap = _map()
    lo = tmap.quantiles[QUANTILE_LEVELS.index(0.25)]
    hi = tmap.quantiles[QUANTILE_LEVELS.index(0.75)]
    torch.testing.assert_close(transport(x, tmap, 0.8, "q0.25-0.75"),
                               _reference(x, tmap, 0.8, lo, hi))
    unbounded = transport(x, tmap, 0.8, "unbounded")
    a, b = fold(tmap, 0.8)
    assert torch.equal(unbounded, torch.addcmul(b, x, a))


def test_results_do_not_depend_on_chunking(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(37, 6) * 2
    tmap = _map()
    whole = transport(x, tmap, 0.7)
    half_whole = transport(x.half(), tmap, 0.7)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 6 * 5)  # 5 rows per block, ragged end
    assert torch.equal(transport(x, tmap, 0.7), whole)
    assert torch.equal(transport(x.half(), tmap, 0.7), half_whole)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_keep_their_dtype(dtype):
    torch.manual_seed(0)
    x = (torch.randn(3, 8, 6) * 2).to(dtype)
    tmap = _map()
    out = transport(x, tmap, 1.0)
    assert out.dtype == dtype and out.shape == x.shape
    expected = _reference(x.double(), tmap.to(dtype=torch.float64), 1.0).to(dtype)
    torch.testing.assert_close(out, expected)
    outside = (x.double() < -1) | (x.double() > 1)
    assert torch.equal(out[outside], x[outside])
    channels = transport_channels(x.reshape(3, 6, 2, 4), tmap, 1.0)
    assert channels.dtype == dtype


def test_per_item_strength_broadcasts_over_tokens_and_vectors():
    torch.manual_seed(0)
    tmap = _map()
    lam = torch.tensor([0.2, 1.0, 2.0])
    for x in (torch.randn(3, 4, 6), torch.randn(3, 6)):
        out = transport(x, tmap, lam)
        for i in range(3):
            torch.testing.assert_close(out[i], _reference(x[i], tmap, float(lam[i])))


def _channel_reference(x, tmap, lam):
    mu = x.mean(dim=(2, 3))  # (B, C)
    inside = (mu >= tmap.lo) & (mu <= tmap.hi)
    delta = lam.reshape(-1, 1) * ((tmap.scale - 1) * mu + tmap.shift) * inside
    return x + delta[:, :, None, None]


def test_channel_mode_shifts_whole_channels_by_their_transported_mean():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 7) + torch.randn(3, 6, 1, 1) * 1.5
    tmap = _map()
    lam = torch.tensor([1.0, 0.5, 0.0])
    out = transport_channels(x, tmap, lam)
    torch.testing.assert_close(out, _channel_reference(x, tmap, lam))
    change = out - x
    torch.testing.assert_close(change, change[:, :, :1, :1].expand_as(change))  # pattern kept
    mu = x.mean(dim=(2, 3))
    outside = (mu < -1) | (mu > 1)
    assert bool(outside.any()) and bool((~outside).any())
    assert torch.equal(_bits(out[outside]), _bits(x[outside]))
    assert torch.equal(_bits(out[2]), _bits(x[2]))
    inside = ~outside[:1]
    torch.testing.assert_close(out[:1].mean(dim=(2, 3))[inside],
                               (tmap.scale * mu[:1] + tmap.shift)[inside])


def test_channel_mode_scalar_strength_and_video_layout():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 4, 4) * 0.2
    tmap = _map()
    out = transport_channels(x, tmap, 1.0)
    mu = x.mean(dim=(2, 3, 4))
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), tmap.scale * mu + tmap.shift)


@pytest.mark.parametrize(
    ("strength", "error", "message"),
    [
        (-0.5, StrengthError, "inverse"),
        (float("nan"), StrengthError, "finite"),
        (torch.tensor([1.0, -1.0]), StrengthError, ">= 0"),
        (torch.ones(3), StrengthError, "shape"),
        (torch.ones(2, 1), StrengthError, "shape"),
        ("1", StrengthError, "number"),
    ],
)
def test_bad_strengths_are_refused(strength, error, message):
    with pytest.raises(error, match=message):
        transport(torch.randn(2, 6), _map(), strength)


def test_width_mismatch_is_refused():
    with pytest.raises(MapCompatibilityError, match="D=6"):
        transport(torch.randn(2, 5), _map(), 1.0)
    with pytest.raises(MapCompatibilityError, match="D=6"):
        transport_channels(torch.randn(2, 5, 3, 3), _map(), 1.0)


def test_extrapolation_warns_once_past_the_bound(caplog):
    _warned.clear()
    tmap = _map()
    with caplog.at_level(logging.WARNING, logger="act_core.transport"):
        transport(torch.randn(2, 6), tmap, 2.0)
        assert not caplog.records
        transport(torch.randn(2, 6), tmap, 3.0)
        transport(torch.randn(2, 6), tmap, torch.tensor([0.0, 4.0]))
    assert len(caplog.records) == 1


def test_fitted_map_at_full_strength_lands_on_the_target_mean():
    torch.manual_seed(0)
    source, target = torch.randn(300, 6), torch.randn(300, 6) * 0.5 + 2
    moved = transport(source, fit(source, target), 1.0)
    torch.testing.assert_close(moved.mean(0), target.mean(0), rtol=1e-4, atol=1e-4)


def test_negative_zero_outside_a_support_excluding_zero_keeps_its_value():
    tmap = _map(lo=0.5, hi=2.0)
    x = torch.tensor([[-0.0, 0.0, 1.0, 3.0, -1.0, float("nan")]])
    out = transport(x, tmap, 1.0)
    assert torch.equal(out[0, [0, 1, 3, 4]], x[0, [0, 1, 3, 4]])  # -0.0 == +0.0
    assert torch.isnan(out[0, 5]) and out[0, 2] != x[0, 2]


def test_masked_transport_inside_inference_mode_uses_worker_threads_safely():
    """ComfyUI runs nodes under torch.inference_mode(); the CPU kernel's worker threads must
    run under the same mode (it is thread-local), or in-place updates of inference tensors
    fail there."""
    from act_core import fit, transport

    torch.manual_seed(0)
    tmap = fit(torch.randn(64, 256), torch.randn(64, 256) * 2 + 1)
    with torch.inference_mode():
        x = torch.randn(512, 256)
        y = transport(x, tmap, 0.5, "minmax")
    expected = transport(x.clone(), tmap, 0.5, "minmax")
    assert torch.equal(y, expected)
