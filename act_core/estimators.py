"""Estimators: pure functions from a source and a target sample to a :class:`TransportMap`.

Every estimator has the signature ``estimator(source, target, *, mode="tokens", **options)``
with ``source`` of shape (N, D) and ``target`` of shape (M, D) (one pooled activation vector per
row), and returns a per-unit affine map ``T_j(x) = omega_j x + beta_j`` plus the source support.

=============== ============================================= ===================================
name            omega                                         beta
=============== ============================================= ===================================
``linear_act``  least squares through sorted (quantile) pairs ``mean b - omega mean a``
``mean_act``    1                                             ``mean b - mean a``
``gaussian_ot`` ``std b / std a``                             ``mean b - omega mean a``
``aura``        ``2 (1 - AUROC)`` if AUROC > 0.5 else 1       0
``diff_means``  1 (strength unbounded, ActAdd/ITI style)      ``mean b - mean a``
=============== ============================================= ===================================

A (near-)constant source unit (``max a - min a <= eps * max(|mean a|, |mean b|, max b - min b)``)
would make ``linear_act`` and ``gaussian_ot`` divide by ~0: it falls back to the pure shift
``omega = 1, beta = mean b - mean a`` and is counted in ``TransportMap.guarded``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .errors import FitError
from .maps import MODES, TransportMap
from .samples import (
    centre,
    centred_dot,
    check_samples,
    pair_sorted,
    require_finite,
    sort_units,
    source_support,
)
from .sorted_moments import sorted_pair_moments

__all__ = [
    "ESTIMATORS", "aura", "diff_means", "fit", "fit_many", "gaussian_ot", "linear_act", "mean_act",
]

_F64 = torch.float64


def _build(sorted_a: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *, method: str,
           mode: str, n_target: int, guarded: int = 0, unbounded: bool = False) -> TransportMap:
    """Assemble a map from float64 coefficients (D,) and the unit-major sorted source (D, N)."""
    lo, hi, quantiles = source_support(sorted_a)
    return TransportMap(
        scale=scale.to(torch.float32), shift=shift.to(torch.float32), lo=lo, hi=hi,
        quantiles=quantiles, method=method, mode=mode, n_source=int(sorted_a.shape[1]),
        n_target=n_target, guarded=guarded, unbounded_strength=unbounded,
    )


def _constant_units(range_a: torch.Tensor, mean_a: torch.Tensor, mean_b: torch.Tensor,
                    range_b: torch.Tensor, eps: float) -> torch.Tensor:
    """Bool (D,): units whose source range is negligible against the unit's own scale."""
    reference = torch.maximum(torch.maximum(mean_a.abs(), mean_b.abs()), range_b.to(_F64))
    return range_a.to(_F64) <= eps * reference


def _sorted_checked(name: str, x: torch.Tensor) -> torch.Tensor:
    """Unit-major sorted copy (D, N) of ``x`` (N, D); its extremes prove ``x`` finite."""
    ordered = sort_units(x)
    require_finite(name, x, ordered[:, [0, -1]])  # NaN sorts last, infinities at the ends
    return ordered


def linear_act(source: torch.Tensor, target: torch.Tensor, *, mode: str = "tokens",
               eps: float = 1e-5) -> TransportMap:
    """Linear-AcT: per unit, least squares through the sorted (optimal-transport) pairs.

    With ``a_(i)``, ``b_(i)`` the paired order statistics (quantile pairing when N != M, see
    :func:`~act_core.samples.pair_sorted`)::

        omega = sum (a_(i) - mean a)(b_(i) - mean b) / sum (a_(i) - mean a)^2
        beta  = mean b - omega mean a

    Equivalently ``omega = rho * std b / std a`` with ``rho >= 0`` the correlation of the sorted
    samples. Sorting is done in float32; the sums are accumulated in float64. On CPU everything
    is taken in one cache-blocked pass (:mod:`act_core.sorted_moments`), about 1.3 times the
    cost of merely sorting the two samples (``benchmarks/bench_core.py``); elsewhere two sorts
    plus about six elementwise passes over the samples.

    Parameters
    ----------
    source : Tensor, shape (N, D)
    target : Tensor, shape (M, D)
    mode : str
        Stored in the map, one of :data:`~act_core.maps.MODES`.
    eps : float
        Relative threshold of the constant-unit guard.

    Returns
    -------
    TransportMap
        ``scale``, ``shift``, ``lo``, ``hi`` of shape (D,), ``quantiles`` (K, D).
    """
    source, target = check_samples(source, target)
    if source.device.type == "cpu":
        return _linear_act_cpu(source, target, mode=mode, eps=eps)
    sorted_a = _sorted_checked("source", source)  # (D, N)
    sorted_b = _sorted_checked("target", target)  # (D, M)
    paired_a, paired_b = pair_sorted(sorted_a, sorted_b)  # (D, n) each
    mean_a, centred_a, residual_a = centre(paired_a)  # (D,) float64, (D, n) float32, (D,)
    mean_b, centred_b, residual_b = centre(paired_b)
    var = centred_dot(centred_a, residual_a, centred_a, residual_a)  # (D,) n * var a
    cov = centred_dot(centred_a, residual_a, centred_b, residual_b)  # (D,) n * cov(a, b)
    range_a, range_b = sorted_a[:, -1] - sorted_a[:, 0], sorted_b[:, -1] - sorted_b[:, 0]
    guard = _constant_units(range_a, mean_a, mean_b, range_b, eps) | (var <= 0)
    scale = torch.where(guard, torch.ones_like(var), cov / torch.where(guard, 1.0, var))
    shift = mean_b - scale * mean_a  # (D,)
    if source.shape[0] != target.shape[0] and bool(guard.any()):
        # the pure-shift fallback uses the means of the full samples, not of the resampled one
        full_shift = target.mean(0, dtype=_F64) - source.mean(0, dtype=_F64)  # (D,)
        shift = torch.where(guard, full_shift, shift)
    return _build(sorted_a, scale, shift, method="linear_act", mode=mode,
                  n_target=target.shape[0], guarded=int(guard.sum()))


def _linear_act_cpu(source: torch.Tensor, target: torch.Tensor, *, mode: str,
                    eps: float) -> TransportMap:
    """:func:`linear_act` on CPU float32 samples, from one cache-blocked pass over them.

    Same estimator, guard and support as the general path (see
    :func:`~act_core.sorted_moments.sorted_pair_moments` for how the float64 sums are formed).
    """
    stats = sorted_pair_moments(source, target)
    mean_a, mean_b = torch.from_numpy(stats.mean_a), torch.from_numpy(stats.mean_b)
    var, cov = torch.from_numpy(stats.sxx), torch.from_numpy(stats.sxy)  # (D,) n var, n cov
    lo, hi = torch.from_numpy(stats.lo), torch.from_numpy(stats.hi)
    guard = _constant_units(hi - lo, mean_a, mean_b, torch.from_numpy(stats.range_b), eps)
    guard |= var <= 0
    scale = torch.where(guard, torch.ones_like(var), cov / torch.where(guard, 1.0, var))
    shift = mean_b - scale * mean_a  # (D,)
    if source.shape[0] != target.shape[0]:
        # the pure-shift fallback uses the means of the full samples, not of the resampled one
        full_shift = torch.from_numpy(stats.full_mean_b - stats.full_mean_a)  # (D,)
        shift = torch.where(guard, full_shift, shift)
    return TransportMap(
        scale=scale.to(torch.float32), shift=shift.to(torch.float32), lo=lo, hi=hi,
        quantiles=stats.quantiles, method="linear_act", mode=mode, n_source=source.shape[0],
        n_target=target.shape[0], guarded=int(guard.sum()),
    )


def gaussian_ot(source: torch.Tensor, target: torch.Tensor, *, mode: str = "tokens",
                eps: float = 1e-5) -> TransportMap:
    """Gaussian 1-D optimal transport: ``omega = std b / std a``, ``beta = mean b - omega mean a``.

    Standard deviations are population ones (``ddof = 0``) for both samples, so the transported
    source has exactly the target's mean and standard deviation.

    Parameters
    ----------
    source : Tensor, shape (N, D)
    target : Tensor, shape (M, D)
    mode : str
    eps : float
        Relative threshold of the constant-unit guard (pure-shift fallback).
    """
    source, target = check_samples(source, target)
    sorted_a = _sorted_checked("source", source)  # (D, N)
    mean_a, centred_a, residual_a = centre(sorted_a)
    mean_b, centred_b, residual_b = centre(target.t().contiguous())  # (D, M) unit-major
    require_finite("target", target, mean_b)
    var_a = centred_dot(centred_a, residual_a, centred_a, residual_a) / source.shape[0]  # (D,)
    var_b = centred_dot(centred_b, residual_b, centred_b, residual_b) / target.shape[0]  # (D,)
    range_b = target.amax(dim=0) - target.amin(dim=0)
    guard = _constant_units(sorted_a[:, -1] - sorted_a[:, 0], mean_a, mean_b, range_b, eps)
    guard |= var_a <= 0
    scale = torch.where(guard, 1.0, (var_b / torch.where(guard, 1.0, var_a)).sqrt())
    return _build(sorted_a, scale, mean_b - scale * mean_a, method="gaussian_ot", mode=mode,
                  n_target=target.shape[0], guarded=int(guard.sum()))


def _shift_map(source: torch.Tensor, target: torch.Tensor, method: str, mode: str,
               unbounded: bool) -> TransportMap:
    source, target = check_samples(source, target)
    sorted_a = _sorted_checked("source", source)  # (D, N)
    mean_b = target.mean(dim=0, dtype=_F64)  # (D,)
    require_finite("target", target, mean_b)
    shift = mean_b - source.mean(dim=0, dtype=_F64)  # (D,)
    return _build(sorted_a, torch.ones_like(shift), shift, method=method,
                  mode=mode, n_target=target.shape[0], unbounded=unbounded)


def mean_act(source: torch.Tensor, target: torch.Tensor, *, mode: str = "tokens") -> TransportMap:
    """Mean-AcT: a per-unit shift, ``omega = 1``, ``beta = mean b - mean a``.

    At strength 1 the transported source has the target's mean. Shapes as :func:`linear_act`.
    """
    return _shift_map(source, target, "mean_act", mode, unbounded=False)


def diff_means(source: torch.Tensor, target: torch.Tensor, *, mode: str = "tokens"
               ) -> TransportMap:
    """Difference of means as an additive steering vector (ActAdd / CAA / ITI-m style).

    Same coefficients as :func:`mean_act` (``omega = 1``, ``beta = mean b - mean a``), but the
    map is flagged ``unbounded_strength``: like the steering methods it imitates, its strength
    has no calibrated meaning and large values are allowed without a warning. Shapes as
    :func:`linear_act`.
    """
    return _shift_map(source, target, "diff_means", mode, unbounded=True)


def aura(source: torch.Tensor, target: torch.Tensor, *, mode: str = "tokens") -> TransportMap:
    """AurA: dampen the units that detect the source, ``omega = 1 - Gini``, ``beta = 0``.

    For every unit the AUROC of its value as a score separating source (positive class, the one
    to dampen) from target is ``P(a > b) + P(a = b) / 2`` (Mann-Whitney, ties counted half).
    Units with AUROC > 0.5 get ``omega = 1 - Gini = 2 (1 - AUROC)``, the others ``omega = 1``.
    Shapes as :func:`linear_act`.
    """
    source, target = check_samples(source, target)
    n, m = source.shape[0], target.shape[0]
    sorted_a = _sorted_checked("source", source)  # (D, N); the order of a is irrelevant here
    sorted_b = _sorted_checked("target", target)  # (D, M)
    below = torch.searchsorted(sorted_b, sorted_a, side="left")  # (D, N): count of b < a
    not_above = torch.searchsorted(sorted_b, sorted_a, side="right")  # (D, N): count of b <= a
    wins = below.sum(dim=1, dtype=_F64) + 0.5 * (not_above - below).sum(dim=1, dtype=_F64)
    auroc = wins / (n * m)  # (D,)
    scale = torch.where(auroc > 0.5, 2.0 * (1.0 - auroc), torch.ones_like(auroc))
    return _build(sorted_a, scale, torch.zeros_like(scale), method="aura", mode=mode,
                  n_target=m)


#: Registry of estimators by name; ``fit`` dispatches through it.
ESTIMATORS: dict[str, Callable[..., TransportMap]] = {
    "linear_act": linear_act,
    "mean_act": mean_act,
    "gaussian_ot": gaussian_ot,
    "aura": aura,
    "diff_means": diff_means,
}


def fit(source: torch.Tensor, target: torch.Tensor, method: str = "linear_act", *,
        mode: str = "tokens", **options: float) -> TransportMap:
    """Fit a transport map from a source sample to a target sample with a named estimator.

    Parameters
    ----------
    source : Tensor, shape (N, D)
        Pooled source activations, one row per input, N >= 2.
    target : Tensor, shape (M, D)
        Pooled target activations, M >= 2 (M may differ from N).
    method : str
        A key of :data:`ESTIMATORS` (default ``"linear_act"``).
    mode : str
        How the map will be applied, one of :data:`~act_core.maps.MODES`.
    **options
        Passed to the estimator (e.g. ``eps`` for ``linear_act``).

    Returns
    -------
    TransportMap

    Raises
    ------
    FitError
        Unknown method or mode, wrong shapes, different D, fewer than 2 samples, non-finite values.
    """
    estimator = ESTIMATORS.get(method)
    if estimator is None:
        raise FitError(f"unknown method {method!r}; choose one of {sorted(ESTIMATORS)}")
    if mode not in MODES:
        raise FitError(f"unknown mode {mode!r}; choose one of {MODES}")
    return estimator(source, target, mode=mode, **options)


def fit_many(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
             method: str = "linear_act", *, modes: Mapping[str, str] | None = None,
             **options: float) -> dict[str, TransportMap]:
    """Fit one map per site: ``{site: (source (N, D), target (M, D))} -> {site: TransportMap}``.

    ``modes`` gives the mode per site (default ``"tokens"``). Errors name the failing site.
    """
    maps: dict[str, TransportMap] = {}
    for site, (source, target) in pairs.items():
        mode = (modes or {}).get(site, "tokens")
        try:
            maps[site] = fit(source, target, method, mode=mode, **options)
        except FitError as error:
            raise FitError(f"site {site!r}: {error}") from error
    return maps
