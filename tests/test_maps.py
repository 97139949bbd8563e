"""TransportMap: validation, immutability, .to() and inverse()."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from act_core import MapError, TransportMap, transport
from act_core.maps import QUANTILE_LEVELS


def _map(d: int = 4, **changes) -> TransportMap:
    torch.manual_seed(0)
    quantiles = torch.sort(torch.randn(len(QUANTILE_LEVELS), d), dim=0).values
    fields = dict(scale=torch.rand(d) + 0.5, shift=torch.randn(d), lo=quantiles[0].clone(),
                  hi=quantiles[-1].clone(), quantiles=quantiles)
    fields.update(changes)
    return TransportMap(**fields)


def test_valid_map_has_its_width_and_defaults():
    tmap = _map(5)
    assert tmap.dim == 5 and tmap.mode == "tokens" and tmap.method == "linear_act"
    assert tmap.quantile_levels == QUANTILE_LEVELS and not tmap.unbounded_strength


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"shift": torch.zeros(3)}, "shift has shape"),
        ({"scale": torch.ones(4, 1)}, "shape \\(D,\\)"),
        ({"quantiles": torch.zeros(3, 4)}, "quantiles has shape"),
        ({"scale": torch.tensor([1.0, float("inf"), 1.0, 1.0])}, "NaN or infinite"),
        ({"lo": torch.full((4,), 10.0)}, "lo exceeds hi"),
        ({"mode": "pixels"}, "mode must be one of"),
        ({"guarded": 9}, "exceeds the width"),
        ({"n_source": -1}, ">= 0"),
        ({"scale": torch.ones(4, dtype=torch.int64)}, "floating-point"),
        ({"quantile_levels": (0.5, 0.1) + QUANTILE_LEVELS[2:]}, "strictly increasing"),
    ],
)
def test_invalid_maps_are_refused(changes, message):
    with pytest.raises(MapError, match=message):
        _map(**changes)


def test_moved_units_are_those_whose_map_is_not_the_identity():
    scale = torch.tensor([1.0, 1.0, 0.5, 1.0, 2.0])
    shift = torch.tensor([0.0, 0.3, 0.0, 0.0, -1.0])
    tmap = _map(5, scale=scale, shift=shift)
    assert tmap.moved_units.tolist() == [False, True, True, False, True]
    assert not _map(5, scale=torch.ones(5), shift=torch.zeros(5)).moved_units.any()


def test_map_is_frozen_and_to_returns_a_replaced_copy():
    tmap = _map()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tmap.scale = torch.ones(4)  # type: ignore[misc]
    half = tmap.to(dtype=torch.float64)
    assert half is not tmap and half.scale.dtype == torch.float64
    assert tmap.scale.dtype == torch.float32  # original untouched
    assert tmap.to() is tmap and tmap.to("cpu") is tmap
    assert half.mode == tmap.mode and half.quantile_levels == tmap.quantile_levels


def test_inverse_undoes_the_map_and_maps_the_support():
    tmap = _map()
    x = torch.linspace(-3, 3, 50).unsqueeze(1).expand(50, 4)
    back = transport(transport(x, tmap, 1.0, "unbounded"), tmap.inverse(), 1.0, "unbounded")
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
    inverse = tmap.inverse()
    torch.testing.assert_close(inverse.lo, tmap.scale * tmap.lo + tmap.shift)
    assert bool((inverse.lo <= inverse.hi).all())
    with pytest.raises(MapError, match="swapped"):
        _map(scale=torch.tensor([1.0, 0.0, 1.0, 1.0])).inverse()
