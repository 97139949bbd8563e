"""Shared 1-D optimal-transport machinery on samples: validation, sorting, quantile functions.

In one dimension the optimal coupling of two samples pairs them in sorted order. All functions
here work on every unit (column) at once; there is no Python loop over units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import FitError
from .maps import QUANTILE_LEVELS

__all__ = ["check_samples", "interpolate_sorted", "moments", "pair_sorted", "source_support"]


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
        If an input is not a 2-D tensor, the widths differ, ``N < 2`` or ``M < 2``, or a value is
        NaN or infinite.
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
    source = source.to(torch.float32)
    target = target.to(torch.float32)
    for name, value in (("source", source), ("target", target)):
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).any(dim=0).sum())
            raise FitError(f"{name} contains NaN or infinite values in {bad} unit(s); "
                           "check the model's numerics (e.g. run it in float32)")
    return source, target


def interpolate_sorted(sorted_x: torch.Tensor, levels: Sequence[float] | torch.Tensor
                       ) -> torch.Tensor:
    """Evaluate the empirical quantile function of sorted samples at given levels.

    The quantile function is the piecewise-linear interpolation of the points
    ``(i / (n - 1), x_(i))``, ``i = 0 .. n-1`` (``torch.quantile``'s "linear" rule): level 0 gives
    the minimum and level 1 the maximum, exactly.

    Parameters
    ----------
    sorted_x : Tensor, shape (n, D)
        Samples sorted along dim 0.
    levels : sequence of float or Tensor, shape (K,)
        Levels in [0, 1].

    Returns
    -------
    Tensor, shape (K, D), dtype of ``sorted_x``.
    """
    n = sorted_x.shape[0]
    levels = torch.as_tensor(levels, dtype=torch.float64, device=sorted_x.device)
    position = levels.clamp(0.0, 1.0) * (n - 1)  # (K,)
    below = position.floor().long().clamp(0, n - 1)  # (K,)
    above = (below + 1).clamp(max=n - 1)  # (K,)
    weight = (position - below).to(sorted_x.dtype).unsqueeze(1)  # (K, 1)
    start = sorted_x.index_select(0, below)  # (K, D)
    end = sorted_x.index_select(0, above)  # (K, D)
    return torch.lerp(start, end, weight)


def pair_sorted(sorted_a: torch.Tensor, sorted_b: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair two sorted samples by quantiles (the 1-D optimal coupling).

    Equal sizes pair the i-th smallest with the i-th smallest. For unequal sizes the quantile
    function of the larger sample is interpolated at the smaller sample's levels
    ``i / (n - 1)``, so both outputs have ``n = min(N, M)`` rows.

    Parameters
    ----------
    sorted_a : Tensor, shape (N, D)
    sorted_b : Tensor, shape (M, D)

    Returns
    -------
    paired_a, paired_b : Tensor, shape (n, D) each.
    """
    n, m = sorted_a.shape[0], sorted_b.shape[0]
    if n == m:
        return sorted_a, sorted_b
    if n < m:
        levels = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        return sorted_a, interpolate_sorted(sorted_b, levels)
    levels = torch.linspace(0.0, 1.0, m, dtype=torch.float64)
    return interpolate_sorted(sorted_a, levels), sorted_b


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the float64 mean and the float32 centred sample of every unit.

    Centering is done in float32 around the float64 mean (rounded once); sums of products of the
    centred values are then accumulated in float64 by the callers. This keeps the cost of one
    float32 pass while avoiding the cancellation of raw second moments.

    Parameters
    ----------
    x : Tensor, shape (n, D), float32

    Returns
    -------
    mean : Tensor, shape (D,), float64
    centred : Tensor, shape (n, D), float32
    """
    mean = x.sum(dim=0, dtype=torch.float64) / x.shape[0]  # (D,)
    return mean, x - mean.to(x.dtype)


def source_support(sorted_a: torch.Tensor, levels: Sequence[float] = QUANTILE_LEVELS
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``lo``, ``hi`` (shape (D,)) and the quantiles (shape (K, D)) of a sorted source."""
    quantiles = interpolate_sorted(sorted_a, levels)  # (K, D)
    return sorted_a[0].clone(), sorted_a[-1].clone(), quantiles
