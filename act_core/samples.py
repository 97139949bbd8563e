"""Shared 1-D optimal-transport machinery on samples: validation, sorting, quantile functions.

In one dimension the optimal coupling of two samples pairs them in sorted order. All functions
here work on every unit at once; there is no Python loop over units. Sorted samples are kept
*unit-major*, shape (D, N): one contiguous row per unit, so per-unit reductions are contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import FitError
from .maps import QUANTILE_LEVELS

__all__ = [
    "centre", "centred_dot", "check_samples", "interpolate_sorted", "pair_sorted", "require_finite",
    "sort_units", "source_support",
]


def check_samples(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a source and a target sample and return them as float32.

    Parameters
    ----------
    source : Tensor, shape (N, D)
    target : Tensor, shape (M, D)

    Returns
    -------
    source, target : Tensor, shapes (N, D) and (M, D), float32, same device as the inputs.

    Raises
    ------
    FitError
        If an input is not a 2-D tensor, the widths differ, or ``N < 2`` or ``M < 2``.
        Finiteness is checked by the estimators with :func:`require_finite`, from by-products.
    """
    for name, value in (("source", source), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise FitError(f"{name} must be a torch.Tensor of shape (N, D), "
                           f"found {type(value).__name__}")
        if value.ndim != 2:
            raise FitError(f"{name} must have shape (N, D) (one pooled vector per row), "
                           f"found shape {tuple(value.shape)}")
        if value.shape[0] < 2:
            raise FitError(f"{name} has {value.shape[0]} sample(s); at least 2 are needed "
                           "to estimate a transport map")
        if value.is_complex() or value.dtype == torch.bool:
            raise FitError(f"{name} must be real-valued, found dtype {value.dtype}")
    if source.shape[1] != target.shape[1]:
        raise FitError(f"source and target widths differ: source D={source.shape[1]}, "
                       f"target D={target.shape[1]}; record both from the same site")
    if source.device != target.device:
        raise FitError(f"source is on {source.device} but target on {target.device}")
    return source.detach().to(torch.float32), target.detach().to(torch.float32)


def sort_units(x: torch.Tensor) -> torch.Tensor:
    """Sort every unit's sample: (N, D) in, unit-major (D, N) out, ascending along dim 1.

    On CPU this uses NumPy's vectorised (SIMD) sort on a contiguous unit-major copy, several times
    faster than ``torch.sort`` (which also computes indices); elsewhere ``torch.sort``.

    Parameters
    ----------
    x : Tensor, shape (N, D), finite

    Returns
    -------
    Tensor, shape (D, N), contiguous, same dtype and device.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        array = np.ascontiguousarray(x.detach().numpy().T)  # (D, N) copy
        array.sort(axis=1)
        return torch.from_numpy(array)
    return torch.sort(x.detach().t(), dim=1).values.contiguous()


def interpolate_sorted(sorted_x: torch.Tensor, levels: Sequence[float] | torch.Tensor
                       ) -> torch.Tensor:
    """Evaluate the empirical quantile function of sorted samples at given levels.

    The quantile function is the piecewise-linear interpolation of the points
    ``(i / (n - 1), x_(i))``, ``i = 0 .. n-1`` (``torch.quantile``'s "linear" rule): level 0 gives
    the minimum and level 1 the maximum, exactly.

    Parameters
    ----------
    sorted_x : Tensor, shape (D, n)
        Unit-major samples sorted along dim 1 (see :func:`sort_units`).
    levels : sequence of float or Tensor, shape (K,)
        Levels in [0, 1].

    Returns
    -------
    Tensor, shape (D, K), dtype of ``sorted_x``.
    """
    n = sorted_x.shape[1]
    levels = torch.as_tensor(levels, dtype=torch.float64, device=sorted_x.device)
    position = levels.clamp(0.0, 1.0) * (n - 1)  # (K,)
    below = position.floor().long().clamp(0, n - 1)  # (K,)
    above = (below + 1).clamp(max=n - 1)  # (K,)
    weight = (position - below).to(sorted_x.dtype)  # (K,)
    start = sorted_x.index_select(1, below)  # (D, K)
    end = sorted_x.index_select(1, above)  # (D, K)
    return torch.lerp(start, end, weight)


def pair_sorted(sorted_a: torch.Tensor, sorted_b: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair two sorted samples by quantiles (the 1-D optimal coupling).

    Equal sizes pair the i-th smallest with the i-th smallest. For unequal sizes the quantile
    function of the larger sample is interpolated at the smaller sample's levels
    ``i / (n - 1)``, so both outputs have ``n = min(N, M)`` columns.

    Parameters
    ----------
    sorted_a : Tensor, shape (D, N)
    sorted_b : Tensor, shape (D, M)
        Unit-major sorted samples.

    Returns
    -------
    paired_a, paired_b : Tensor, shape (D, n) each.
    """
    n, m = sorted_a.shape[1], sorted_b.shape[1]
    if n == m:
        return sorted_a, sorted_b
    if n < m:
        levels = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        return sorted_a, interpolate_sorted(sorted_b, levels)
    levels = torch.linspace(0.0, 1.0, m, dtype=torch.float64)
    return interpolate_sorted(sorted_a, levels), sorted_b


def centre(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre every unit's sample and return what exact second moments need.

    The sample is centred in float32 around its float32 mean; the small residual mean of the
    centred values (the rounding of that mean) is kept, so that :func:`centred_dot` gives the
    exact centred sums ``sum (x - mean x)(y - mean y)`` without the cancellation of raw moments.

    Parameters
    ----------
    x : Tensor, shape (D, n), float32, unit-major

    Returns
    -------
    mean : Tensor, shape (D,), float64
        The sample mean.
    centred : Tensor, shape (D, n), float32
        ``x`` minus its float32 mean.
    residual : Tensor, shape (D,), float64
        Mean of ``centred`` (about one rounding error of the mean).
    """
    approx = x.mean(dim=1, keepdim=True)  # (D, 1) float32, pairwise summation
    centred = x - approx  # (D, n)
    residual = centred.mean(dim=1).double()  # (D,)
    return approx.squeeze(1).double() + residual, centred, residual


def centred_dot(centred_x: torch.Tensor, residual_x: torch.Tensor, centred_y: torch.Tensor,
                residual_y: torch.Tensor) -> torch.Tensor:
    """Per unit ``sum_i (x_i - mean x)(y_i - mean y)`` from the outputs of :func:`centre`.

    Parameters
    ----------
    centred_x, centred_y : Tensor, shape (D, n), float32
    residual_x, residual_y : Tensor, shape (D,), float64

    Returns
    -------
    Tensor, shape (D,), float64.
    """
    n = centred_x.shape[1]
    dot = torch.bmm(centred_x.unsqueeze(1), centred_y.unsqueeze(2)).view(-1)  # (D,) batched dot
    return dot.double() - n * residual_x * residual_y


def require_finite(name: str, x: torch.Tensor, summary: torch.Tensor) -> None:
    """Raise FitError when ``x`` holds NaN or infinite values.

    ``summary`` is a cheap by-product that is finite whenever ``x`` is (the sorted extremes, or
    per-unit sums); ``x`` itself is only scanned when ``summary`` is not finite.
    """
    if bool(torch.isfinite(summary).all()):
        return
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return
    bad = int((~finite).any(dim=0).sum())
    raise FitError(f"{name} contains NaN or infinite values in {bad} unit(s); check the model's "
                   "numerics (e.g. run it in float32)")


def source_support(sorted_a: torch.Tensor, levels: Sequence[float] = QUANTILE_LEVELS
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``lo``, ``hi`` (shape (D,)) and the quantiles (shape (K, D)) of a sorted source.

    ``sorted_a`` is unit-major, shape (D, N).
    """
    quantiles = interpolate_sorted(sorted_a, levels).t().contiguous()  # (K, D)
    return sorted_a[:, 0].clone(), sorted_a[:, -1].clone(), quantiles
