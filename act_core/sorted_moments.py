"""Linear-AcT's statistics on CPU in one cache-blocked pass over the samples.

Fitting Linear-AcT needs, per unit, both samples sorted, the least-squares sums through the
sorted pairs and the source support (min, max, quantiles). Done as whole-array operations this
costs a transposed copy and a sort per sample plus half a dozen further passes through main
memory, with float64 copies of the data. Here the units are processed in blocks of a few dozen
(:data:`BLOCK_BYTES` of float32 per sample): each block is copied transposed into a small reused
buffer (unit-major, one contiguous row per unit), sorted in place with NumPy's SIMD sort, and
its statistics are taken while it is still in the core's cache. Nothing of the size of the
samples is allocated, and the only pass through main memory is the read of the input.

Accuracy: every unit's sorted sample is converted to float64 and shifted by its own median (a
free by-product of the sort; the difference of two float32 values is exact in float64, and
``|mean - median| <= std``, so centring the sums afterwards cancels at most one bit); every sum
is accumulated in float64. The result is the float64 least-squares fit (about 1e-14 relative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import FitError
from .maps import QUANTILE_LEVELS

__all__ = ["BLOCK_BYTES", "PairMoments", "block_units", "sorted_pair_moments"]

#: Bytes of float32 per sample per block: 256 KiB (64 units of 1024 samples), so that a sorted
#: block and its float64 copy stay close to the core (L2 / L3 cache).
BLOCK_BYTES = 1 << 18

_F32 = np.float32


@dataclass(frozen=True)
class PairMoments:
    """Per-unit statistics of a source and a target sample paired in sorted order.

    Arrays have shape (D,), except ``quantiles`` (K, D). ``n = min(N, M)`` is the number of
    pairs: when N != M, the larger sample is replaced by its quantile function evaluated at the
    smaller sample's levels ``i / (n - 1)`` (as :func:`act_core.samples.pair_sorted` does).

    Attributes
    ----------
    n : int
    mean_a, mean_b : ndarray, float64
        Means of the paired source and target values.
    sxx : ndarray, float64
        ``sum_i (a_(i) - mean_a)^2`` over the pairs (``n`` times the variance).
    sxy : ndarray, float64
        ``sum_i (a_(i) - mean_a)(b_(i) - mean_b)`` over the pairs.
    full_mean_a, full_mean_b : ndarray, float64
        Means of the whole samples (equal to ``mean_a``, ``mean_b`` when N == M).
    lo, hi : ndarray, float32
        Source minimum and maximum.
    range_b : ndarray, float32
        Target maximum minus minimum, computed in float32.
    quantiles : Tensor, float32, shape (K, D)
        Source quantiles, same rule as :func:`act_core.samples.interpolate_sorted`.
    """

    n: int
    mean_a: np.ndarray
    mean_b: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray
    full_mean_a: np.ndarray
    full_mean_b: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    range_b: np.ndarray
    quantiles: torch.Tensor


def block_units(n: int, m: int, width: int) -> int:
    """Units per block: :data:`BLOCK_BYTES` of float32 of the larger sample, at least 1."""
    return max(1, min(width, BLOCK_BYTES // (4 * max(n, m))))


class _Sample:
    """One sample (source or target) on its way through the blocks, with its scratch buffers.

    Per block it copies the units' columns transposed into a float32 buffer, sorts them, copies
    them into a float64 buffer shifted by their medians and keeps the per-unit extremes,
    medians and float64 sums.
    """

    def __init__(self, name: str, values: np.ndarray, pairs: int, step: int) -> None:
        self.name = name
        self.values = values  # (size, D), any strides
        size, width = values.shape
        self.size = size
        self.sorted = np.empty((step, size), _F32)  # block scratch, unit-major
        self.shifted = np.empty((step, size))  # block scratch, float64
        self.ones = np.ones(size)
        self.low, self.high = np.empty(width, _F32), np.empty(width, _F32)
        self.median = np.empty(width)
        self.full_total = np.empty(width)  # sum of shifted values, whole sample
        self.total = self.full_total if size == pairs else np.empty(width)  # ... paired values
        self.pairing: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if size != pairs:
            # quantile function at the levels i / (pairs - 1): position q (size - 1)
            position = np.linspace(0.0, 1.0, pairs) * (size - 1)  # (pairs,)
            below = np.clip(np.floor(position).astype(np.int64), 0, size - 1)
            self.pairing = (below, np.minimum(below + 1, size - 1), position - below)

    def sort_block(self, units: slice) -> np.ndarray:
        """Copy the block's units transposed, sort them; return the (k, size) float32 rows."""
        rows = self.sorted[:units.stop - units.start]
        np.copyto(rows, self.values[:, units].T)
        rows.sort(axis=1)
        self.low[units], self.high[units] = rows[:, 0], rows[:, -1]
        return rows

    def paired_block(self, rows: np.ndarray, units: slice) -> np.ndarray:
        """Median-shifted float64 values of sorted ``rows``, resampled to the pairs: (k, n)."""
        median = rows[:, self.size // 2].astype(np.float64)  # (k,)
        self.median[units] = median
        shifted = self.shifted[:rows.shape[0]]
        np.copyto(shifted, rows)  # float32 -> float64, exact
        shifted -= median[:, None]  # exact: a difference of two float32 values fits float64
        self.full_total[units] = np.dot(shifted, self.ones)  # (k,) row sums
        if self.pairing is None:
            return shifted
        below, above, weight = self.pairing
        start = shifted[:, below]  # (k, n)
        paired = start + weight * (shifted[:, above] - start)  # (k, n), float64 interpolation
        self.total[units] = paired.sum(axis=1)
        return paired

    def check_finite(self) -> None:
        """Raise FitError unless every value was finite (NaN sorts last, infinities at ends)."""
        good = np.isfinite(self.low) & np.isfinite(self.high)
        if good.all():
            return
        bad = np.flatnonzero(~good)
        raise FitError(f"{self.name} contains NaN or infinite values in {bad.size} unit(s) "
                       f"(first: unit {int(bad[0])}); check the model's numerics "
                       "(e.g. run it in float32)")


if hasattr(np, "vecdot"):  # NumPy >= 2.0: one BLAS dot per row

    def _row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row dot products of two (k, n) float64 arrays, shape (k,)."""
        return np.vecdot(x, y)

else:  # pragma: no cover - NumPy 1.x

    def _row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row dot products of two (k, n) float64 arrays, shape (k,)."""
        return np.matmul(x[:, None, :], y[:, :, None])[:, 0, 0]


def _quantile_plan(levels: Sequence[float], size: int) -> tuple[np.ndarray, torch.Tensor]:
    """Columns of a sorted sample of ``size`` and lerp weights that give the level quantiles.

    Same rule and arithmetic as :func:`act_core.samples.interpolate_sorted`, so the quantiles
    are identical. Returns the columns, shape (2K,) (K lower, then K upper neighbours), and the
    float32 weights, shape (K,).
    """
    position = torch.as_tensor(levels, dtype=torch.float64).clamp(0.0, 1.0) * (size - 1)
    below = position.floor().long().clamp(0, size - 1)
    above = (below + 1).clamp(max=size - 1)
    return torch.cat([below, above]).numpy(), (position - below).to(torch.float32)


def sorted_pair_moments(source: torch.Tensor, target: torch.Tensor,
                        levels: Sequence[float] = QUANTILE_LEVELS,
                        block: int | None = None) -> PairMoments:
    """Sort both samples per unit and return the least-squares sums of the sorted pairs.

    Parameters
    ----------
    source : Tensor, shape (N, D), float32, on CPU (any strides), N >= 2
    target : Tensor, shape (M, D), float32, on CPU, M >= 2
    levels : sequence of float
        Levels in [0, 1] of the source quantiles to return (default :data:`QUANTILE_LEVELS`).
    block : int, optional
        Units per block (default :func:`block_units`).

    Returns
    -------
    PairMoments

    Raises
    ------
    FitError
        If the samples are not float32 CPU tensors of matching width, or hold NaN or infinite
        values.
    """
    for name, value in (("source", source), ("target", target)):
        if value.dtype != torch.float32 or value.device.type != "cpu" or value.ndim != 2:
            raise FitError(f"sorted_pair_moments needs a 2-D float32 CPU {name}, found "
                           f"{value.dtype} of shape {tuple(value.shape)} on {value.device}")
    if source.shape[1] != target.shape[1] or min(source.shape[0], target.shape[0]) < 2:
        raise FitError(f"sorted_pair_moments needs (N, D) and (M, D) samples with N, M >= 2, "
                       f"found {tuple(source.shape)} and {tuple(target.shape)}")
    width = source.shape[1]
    n = min(source.shape[0], target.shape[0])
    step = block or block_units(source.shape[0], target.shape[0], width)
    a = _Sample("source", source.detach().numpy(), n, step)
    b = _Sample("target", target.detach().numpy(), n, step)
    columns, weight = _quantile_plan(levels, a.size)
    picked = np.empty((width, columns.size), _F32)  # source order statistics for the quantiles
    sxx, sxy = np.empty(width), np.empty(width)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite input: raised after the loop
        for first in range(0, width, step):
            units = slice(first, min(width, first + step))
            rows_a, rows_b = a.sort_block(units), b.sort_block(units)
            np.take(rows_a, columns, axis=1, out=picked[units])
            x, y = a.paired_block(rows_a, units), b.paired_block(rows_b, units)  # (k, n) each
            sxx[units] = _row_dots(x, x)
            sxy[units] = _row_dots(x, y)
    a.check_finite()
    b.check_finite()
    # centre: sum (x - xbar)(y - ybar) = sum x y - (sum x)(sum y) / n for the shifted x, y
    sxx -= a.total * a.total / n
    sxy -= a.total * b.total / n
    count = columns.size // 2
    quantiles = torch.lerp(torch.from_numpy(picked[:, :count]), torch.from_numpy(picked[:, count:]),
                           weight)  # (D, K)
    return PairMoments(
        n=n, mean_a=a.median + a.total / n, mean_b=b.median + b.total / n,
        sxx=np.maximum(sxx, 0.0), sxy=sxy,
        full_mean_a=a.median + a.full_total / a.size, full_mean_b=b.median + b.full_total / b.size,
        lo=a.low, hi=a.high, range_b=b.high - b.low, quantiles=quantiles.t().contiguous(),
    )
