"""Properties of the estimators (act_core.estimators) and the sample machinery they share."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from act_core import ESTIMATORS, FitError, fit, fit_many, transport
from act_core.estimators import aura, diff_means, gaussian_ot, linear_act, mean_act
from act_core.maps import QUANTILE_LEVELS
from act_core.strength import _warned


def _skewed(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Non-Gaussian samples: exponential, lognormal and bimodal columns."""
    g = torch.Generator().manual_seed(seed)
    exp = torch.empty(n, d).exponential_(generator=g)
    logn = torch.randn(n, d, generator=g).exp()
    bimodal = torch.randn(n, d, generator=g) + 4.0 * (torch.rand(n, d, generator=g) > 0.7)
    pick = torch.arange(d) % 3
    return torch.where(pick == 0, exp, torch.where(pick == 1, logn, bimodal))


def _numpy_linear_act(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: np.polyfit through quantile-paired sorted samples, per unit."""
    a, b = np.sort(a.astype(np.float64), 0), np.sort(b.astype(np.float64), 0)
    n = min(len(a), len(b))
    grid = np.linspace(0, 1, n)

    def resample(x: np.ndarray) -> np.ndarray:
        levels = np.linspace(0, 1, len(x))
        return np.stack([np.interp(grid, levels, x[:, j]) for j in range(x.shape[1])], 1)

    a, b = resample(a), resample(b)
    fits = [np.polyfit(a[:, j], b[:, j], 1) for j in range(a.shape[1])]
    return np.array([f[0] for f in fits]), np.array([f[1] for f in fits])


@pytest.mark.parametrize("sizes", [(300, 300), (101, 201), (250, 120)])
def test_linear_act_matches_polyfit_on_quantile_pairs(sizes):
    n, m = sizes
    source, target = _skewed(n, 6, seed=1), 2.0 * _skewed(m, 6, seed=2).abs() ** 1.5 - 1.0
    tmap = linear_act(source, target)
    scale, shift = _numpy_linear_act(source.numpy(), target.numpy())
    np.testing.assert_allclose(tmap.scale.numpy(), scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tmap.shift.numpy(), shift, rtol=1e-5, atol=1e-4)
    assert (tmap.n_source, tmap.n_target, tmap.guarded) == (n, m, 0)


def test_linear_act_is_accurate_far_from_zero():
    # mean/std of 1e4: raw second moments in float32 would cancel catastrophically
    source = 1e4 + _skewed(400, 4, 21)
    target = -3e3 + 0.5 * _skewed(300, 4, 22)
    tmap = linear_act(source, target)
    scale, shift = _numpy_linear_act(source.numpy(), target.numpy())
    np.testing.assert_allclose(tmap.scale.numpy(), scale, rtol=2e-5)
    np.testing.assert_allclose(tmap.shift.numpy(), shift, rtol=2e-5)


def test_linear_act_recovers_known_affine_map_per_unit():
    source = _skewed(500, 5)
    slope = torch.tensor([3.0, 0.5, 1.0, 7.0, 0.01])
    intercept = torch.tensor([2.0, -1.0, 0.0, 100.0, 0.3])
    tmap = linear_act(source, source * slope + intercept)
    torch.testing.assert_close(tmap.scale, slope, rtol=1e-5, atol=0)
    torch.testing.assert_close(tmap.shift, intercept, rtol=1e-5, atol=1e-5)


def test_linear_act_recovers_affine_map_with_unequal_aligned_sizes():
    # the target holds the source's quantile function at a grid containing the source's levels,
    # so quantile pairing reproduces the exact affine relation
    source = _skewed(21, 4)
    levels = torch.linspace(0, 1, 41, dtype=torch.float64)
    target = 3.0 * torch.quantile(source.double(), levels, dim=0).float() + 2.0
    tmap = linear_act(source, target)
    torch.testing.assert_close(tmap.scale, torch.full((4,), 3.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(tmap.shift, torch.full((4,), 2.0), rtol=0, atol=1e-4)


def test_negative_relation_gives_the_increasing_ot_map():
    # 1-D OT maps are monotone increasing: a decreasing relation cannot be recovered as such;
    # for a symmetric source, target = -2 s + 1 has the law of 2 s + 1, which is recovered.
    half = _skewed(200, 3)
    source = torch.cat([half, -half])
    tmap = linear_act(source, -2.0 * source + 1.0)
    torch.testing.assert_close(tmap.scale, torch.full((3,), 2.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(tmap.shift, torch.full((3,), 1.0), rtol=0, atol=1e-4)
    tmap = linear_act(_skewed(300, 8, 3), -_skewed(300, 8, 4) ** 2)
    assert bool((tmap.scale >= 0).all())


def test_scale_is_correlation_of_sorted_samples_times_std_ratio():
    source, target = _skewed(400, 6, 5), _skewed(400, 6, 6).flip(1) * 3.0 + 1.0
    tmap = linear_act(source, target)
    a, b = np.sort(source.numpy().astype(np.float64), 0), np.sort(target.numpy(), 0)
    rho = np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(6)])
    expected = rho * b.std(0) / a.std(0)
    assert (rho < 0.999).any()  # genuinely non-Gaussian pairs: shrunk below the std ratio
    np.testing.assert_allclose(tmap.scale.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("sizes", [(2000, 2000), (3000, 1700)])
def test_transported_source_quantiles_match_target(sizes):
    n, m = sizes
    slope, intercept = torch.tensor([3.0, 0.2, 1.5]), torch.tensor([2.0, 5.0, -4.0])
    source = _skewed(n, 3, 7)
    target = _skewed(m, 3, 8) * slope + intercept  # same law, affine image
    moved = transport(source, linear_act(source, target), 1.0)
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    got, want = torch.quantile(moved, levels, dim=0), torch.quantile(target, levels, dim=0)
    spread = target.std(0)
    assert bool(((got - want).abs() <= 0.12 * spread).all())
    if n == m:
        torch.testing.assert_close(torch.sort(moved, 0).values,
                                   torch.sort(linear_act(source, target).scale * source
                                              + linear_act(source, target).shift, 0).values)


def test_equal_size_affine_target_is_reached_exactly():
    source = _skewed(256, 4, 9)
    target = 0.25 * _skewed(256, 4, 9)[torch.randperm(256)] - 3.0  # a permuted affine image
    moved = transport(source, linear_act(source, target), 1.0)
    torch.testing.assert_close(torch.sort(moved, 0).values, torch.sort(target, 0).values,
                               rtol=1e-5, atol=1e-5)


def test_support_statistics_are_source_min_max_and_quantiles():
    source, target = _skewed(97, 5, 10), _skewed(50, 5, 11)
    tmap = linear_act(source, target)
    torch.testing.assert_close(tmap.lo, source.min(0).values, rtol=0, atol=0)
    torch.testing.assert_close(tmap.hi, source.max(0).values, rtol=0, atol=0)
    levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
    torch.testing.assert_close(tmap.quantiles, torch.quantile(source.double(), levels, 0).float())


@pytest.mark.parametrize("method", ["linear_act", "gaussian_ot"])
def test_constant_unit_is_guarded_to_a_finite_shift(method):
    torch.manual_seed(0)
    source, target = torch.randn(64, 4), torch.randn(80, 4) * 2 + 1
    source[:, 1] = 5.0
    source[:, 2] = 5.0 + 5e-7 * torch.randint(0, 3, (64,))  # float32 jitter only
    source[:, 3], target[:, 3] = 0.0, 0.0  # dead on both sides
    tmap = fit(source, target, method)
    assert tmap.guarded == 3
    assert bool(torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all())
    torch.testing.assert_close(tmap.scale[1:], torch.ones(3))
    torch.testing.assert_close(tmap.shift[1], target[:, 1].mean() - 5.0)
    assert tmap.shift[3] == 0.0
    assert tmap.scale[0] != 1.0


def test_mean_act_moves_the_mean_only():
    source, target = _skewed(300, 5, 12), _skewed(200, 5, 13) * 2 + 3
    tmap = mean_act(source, target)
    assert bool((tmap.scale == 1).all())
    moved = transport(source, tmap, 1.0)
    torch.testing.assert_close(moved.mean(0), target.mean(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(moved.std(0), source.std(0), rtol=1e-5, atol=1e-5)


def test_gaussian_ot_matches_target_mean_and_std():
    source, target = _skewed(300, 5, 14), _skewed(170, 5, 15) * 0.3 - 2
    moved = transport(source, gaussian_ot(source, target), 1.0, "unbounded")
    torch.testing.assert_close(moved.mean(0), target.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved.std(0, unbiased=False), target.std(0, unbiased=False),
                               rtol=1e-5, atol=1e-6)


def _auroc_bruteforce(a: np.ndarray, b: np.ndarray) -> float:
    diff = a[:, None] - b[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_aura_matches_bruteforce_auroc_and_leaves_nondiscriminative_units():
    g = torch.Generator().manual_seed(16)
    source = torch.randn(60, 5, generator=g)
    target = torch.randn(70, 5, generator=g)
    target[:, 0] = source[:, 0].repeat(2)[:70]  # ties, AUROC < 0.5 or close
    source[:, 1] += 1.5  # source-detecting unit: damped
    target[:, 2] += 1.5  # target-detecting unit: untouched
    source[:, 3], target[:, 3] = torch.arange(60.0) + 100, torch.arange(70.0)  # fully separated
    source[:, 4] = torch.round(source[:, 4])  # ties across samples
    target[:, 4] = torch.round(target[:, 4])
    tmap = aura(source, target)
    for j in range(5):
        auroc = _auroc_bruteforce(source[:, j].numpy(), target[:, j].numpy())
        expected = 2 * (1 - auroc) if auroc > 0.5 else 1.0
        assert tmap.scale[j].item() == pytest.approx(expected, abs=1e-6)
    assert tmap.scale[1] < 0.5 and tmap.scale[2] == 1.0 and tmap.scale[3] == 0.0
    assert bool((tmap.shift == 0).all())
    same = torch.randn(40, 3, generator=g)
    assert bool((aura(same, same[torch.randperm(40)]).scale == 1.0).all())


def test_diff_means_is_an_unbounded_strength_shift(caplog):
    source, target = _skewed(100, 4, 17), _skewed(90, 4, 18) + 1
    tmap = diff_means(source, target)
    torch.testing.assert_close(tmap.shift, target.mean(0) - source.mean(0))
    assert tmap.unbounded_strength and not mean_act(source, target).unbounded_strength
    _warned.clear()
    with caplog.at_level(logging.WARNING, logger="act_core.transport"):
        transport(source, tmap, 10.0)
        assert not caplog.records
        transport(source, linear_act(source, target), 10.0)
        transport(source, linear_act(source, target), 10.0)
    assert len(caplog.records) == 1 and "extrapolates" in caplog.records[0].getMessage()


def test_registry_and_dispatch():
    assert set(ESTIMATORS) == {"linear_act", "mean_act", "gaussian_ot", "aura", "diff_means"}
    source, target = _skewed(30, 3), _skewed(40, 3, 1)
    for name in ESTIMATORS:
        tmap = fit(source, target, name, mode="channels")
        assert tmap.method == name and tmap.mode == "channels" and tmap.dim == 3


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (torch.zeros(10), torch.zeros(10, 3), "shape (N, D)"),
        (torch.randn(10, 3), torch.randn(10, 4), "widths differ"),
        (torch.randn(1, 3), torch.randn(10, 3), "at least 2"),
        (torch.randn(10, 3), torch.tensor([[1.0, float("nan"), 2.0]] * 5), "NaN or infinite"),
        ([[1.0, 2.0]], torch.randn(10, 2), "torch.Tensor"),
    ],
)
def test_fit_refuses_bad_samples(source, target, message):
    with pytest.raises(FitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit(source, target)


def test_fit_refuses_unknown_method_and_mode_with_choices():
    with pytest.raises(FitError, match="linear_act"):
        fit(torch.randn(5, 2), torch.randn(5, 2), "nope")
    with pytest.raises(ValueError, match="mode"):
        fit(torch.randn(5, 2), torch.randn(5, 2), mode="pixels")


def test_fit_many_names_the_failing_site():
    pairs = {"a": (torch.randn(8, 2), torch.randn(9, 2)),
             "b": (torch.randn(8, 2), torch.ones(1, 2))}
    with pytest.raises(FitError, match="site 'b'"):
        fit_many(pairs)
    maps = fit_many({"a": pairs["a"]}, "gaussian_ot", modes={"a": "vector"})
    assert maps["a"].mode == "vector" and maps["a"].method == "gaussian_ot"


def test_half_precision_samples_are_fitted_in_float32():
    source, target = _skewed(64, 3).half(), (_skewed(64, 3, 1) * 2).bfloat16()
    tmap = fit(source, target)
    assert tmap.scale.dtype == torch.float32
    torch.testing.assert_close(tmap.scale, fit(source.float(), target.float()).scale)
