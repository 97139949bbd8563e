"""The CPU fast path of Linear-AcT (act_core.sorted_moments) against a plain float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from act_core import FitError, sorted_moments
from act_core.estimators import linear_act
from act_core.maps import QUANTILE_LEVELS
from act_core.samples import sort_units, source_support
from act_core.sorted_moments import block_units, sorted_pair_moments


def _reference(source: np.ndarray, target: np.ndarray, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """Linear-AcT written out in float64: sort, pair by quantiles, least squares per unit."""
    a, b = np.sort(source.astype(np.float64), 0), np.sort(target.astype(np.float64), 0)
    n = min(len(a), len(b))

    def paired(x: np.ndarray) -> np.ndarray:  # quantile function at the levels i / (n - 1)
        position = np.linspace(0.0, 1.0, n) * (len(x) - 1)
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, len(x) - 1)
        return x[below] + (position - below)[:, None] * (x[above] - x[below])

    pa, pb = paired(a), paired(b)  # (n, D) each
    mean_a, mean_b = pa.mean(0), pb.mean(0)
    sxx = ((pa - mean_a) ** 2).sum(0)
    sxy = ((pa - mean_a) * (pb - mean_b)).sum(0)
    syy = ((pb - mean_b) ** 2).sum(0)
    reference = np.maximum(np.maximum(np.abs(mean_a), np.abs(mean_b)), b[-1] - b[0])
    guard = (a[-1] - a[0] <= eps * reference) | (sxx <= 0)
    scale = np.where(guard, 1.0, sxy / np.where(guard, 1.0, sxx))
    shift = np.where(guard, b.mean(0) - a.mean(0), mean_b - scale * mean_a)
    return {"n": n, "scale": scale, "shift": shift, "guard": guard, "mean_a": mean_a,
            "mean_b": mean_b, "sxx": sxx, "sxy": sxy, "syy": syy,
            "full_mean_a": a.mean(0), "full_mean_b": b.mean(0)}


def _samples(n: int, m: int, d: int, seed: int, offset: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit scales and offsets, skewed and heavy-tailed targets, and three constant units."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g) * 3 + 0.05
    centre = torch.randn(d, generator=g) * 2 + offset
    source = torch.randn(n, d, generator=g) * scale + centre
    target = (torch.randn(m, d, generator=g).sinh() * scale * 0.7 + centre + 0.5
              + torch.empty(m, d).exponential_(generator=g))
    source[:, 1] = 3.0  # constant source unit
    source[:, 4], target[:, 4] = 0.0, 0.0  # dead on both sides
    source[:, d - 1] = -7.5  # constant unit in the last (partial) block
    return source, target


def _assert_matches_reference(source: torch.Tensor, target: torch.Tensor, block: int | None
                              ) -> int:
    """Compare moments and map with :func:`_reference`; return the number of refined units."""
    want = _reference(source.numpy(), target.numpy())
    before = source.clone(), target.clone()
    moments = sorted_pair_moments(source, target, block=block)
    assert torch.equal(source, before[0]) and torch.equal(target, before[1])  # inputs untouched
    for name in ("mean_a", "mean_b", "full_mean_a", "full_mean_b"):
        np.testing.assert_allclose(getattr(moments, name), want[name], rtol=1e-12,
                                   atol=1e-12 * np.sqrt(want["sxx"].max() / want["n"]),
                                   err_msg=name)
    np.testing.assert_allclose(moments.sxx, want["sxx"], rtol=1e-10, atol=1e-12, err_msg="sxx")
    scale_xy = np.sqrt(want["sxx"] * want["syy"])  # |sxy| <= this (Cauchy-Schwarz)
    assert np.all(np.abs(moments.sxy - want["sxy"]) <= 1e-10 * scale_xy), "sxy"
    assert moments.n == want["n"]
    tmap = linear_act(source, target)
    assert tmap.guarded == int(want["guard"].sum()) >= 3
    np.testing.assert_allclose(tmap.scale.numpy(), want["scale"], rtol=1e-6, atol=0)
    size = np.abs(want["mean_b"]) + np.abs(want["scale"] * want["mean_a"]) + 1e-3
    error = np.abs(tmap.shift.numpy() - want["shift"])
    assert np.all(error <= 1e-6 * size), f"shift: worst relative error {(error / size).max():g}"
    return moments.refined


@pytest.mark.parametrize("sizes", [(257, 257), (150, 333), (400, 61), (2, 2), (2, 5)])
@pytest.mark.parametrize("block", [None, 3, 16])
def test_fast_path_matches_float64_reference(sizes, block):
    n, m = sizes
    source, target = _samples(n, m, 37, seed=n + m)
    refined = _assert_matches_reference(source, target, block)
    assert 3 <= refined < (37 if n > 2 else 38)  # the constant units are redone exactly


@pytest.mark.parametrize("sizes", [(300, 300), (300, 170)])
def test_fast_path_is_float64_accurate_far_from_zero(sizes):
    # |mean| / std up to ~1e4: float32 raw moments would cancel catastrophically
    source, target = _samples(*sizes, 12, seed=3, offset=2e3)
    assert _assert_matches_reference(source, target, None) == 12  # all redone from shifted values


def test_raw_sums_alone_would_not_be_accurate_far_from_zero(monkeypatch):
    # why the ill-conditioned units are redone: without it, sum x^2 - (sum x)^2 / n cancels
    source, target = _samples(300, 300, 12, seed=3, offset=2e3)
    want = _reference(source.numpy(), target.numpy())
    monkeypatch.setattr(sorted_moments, "TOLERANCE", float("inf"))
    raw = sorted_pair_moments(source, target)
    assert raw.refined == 3  # the constant units only
    spread = want["sxx"] > 0
    assert np.abs(raw.sxx[spread] / want["sxx"][spread] - 1).max() > 1e-9


def test_fast_path_accepts_strided_inputs():
    source, target = _samples(120, 90, 20, seed=5)
    strided_source = source.t().contiguous().t()  # same values, column-major
    strided_target = torch.full((target.shape[0], 2 * target.shape[1]), float("nan"))[:, ::2]
    strided_target.copy_(target)  # non-unit column stride, NaN between the columns
    want = linear_act(source, target)
    for got in (linear_act(strided_source, strided_target),
                linear_act(torch._neg_view(-source), target)):  # a lazily negated view
        for name in ("scale", "shift", "lo", "hi", "quantiles"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("n", [97, 1024])
def test_support_equals_the_sorted_source_statistics(n):
    source, target = _samples(n, 64, 9, seed=6)
    lo, hi, quantiles = source_support(sort_units(source))
    tmap = linear_act(source, target)
    assert torch.equal(tmap.lo, lo) and torch.equal(tmap.hi, hi)
    assert torch.equal(tmap.quantiles, quantiles)
    assert tmap.quantiles.shape == (len(QUANTILE_LEVELS), 9)


@pytest.mark.parametrize("which", ["source", "target"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_fast_path_refuses_non_finite_values(which, bad):
    source, target = _samples(50, 40, 10, seed=7)
    (source if which == "source" else target)[3, 6] = bad
    with pytest.raises(FitError, match=f"{which} contains NaN or infinite values in 1 unit"):
        sorted_pair_moments(source, target, block=4)
    with pytest.raises(FitError, match=which):
        linear_act(source, target)


def test_block_size_fits_the_cache_budget():
    assert block_units(1024, 1024, 1280) == 64
    assert block_units(10, 1024, 5) == 5
    assert block_units(10 ** 6, 2, 8) == 1
