"""Linear-AcT's statistics on CPU in one cache-blocked pass over the samples.

Fitting Linear-AcT needs, per unit, both samples sorted, the least-squares sums through the
sorted pairs and the source support (min, max, quantiles). Done as whole-array operations this
costs a transposed copy and a sort per sample plus half a dozen further passes through main
memory, with float64 copies of the data. Here the units are processed in blocks of a few dozen
(:data:`BLOCK_BYTES` of float32 per sample): each block is copied transposed into a small reused
buffer (unit-major, one contiguous row per unit), sorted in place with NumPy's SIMD sort, and
its statistics are taken while it is still in the core's cache. Nothing of the size of the
samples is allocated, and the only pass through main memory is the read of the input.

Accuracy: the sorted float32 values are converted to float64 (exactly) and every sum is
accumulated in float64. The centred sums are first formed from raw sums,
``sum (x - xbar)^2 = sum x^2 - (sum x)^2 / n``: with float32 inputs the products are exact, and
the rounding of the float64 sums is at most ``n * 2**-53`` of ``sum x^2``, relative. A unit whose
mean is so large against its spread that this bound exceeds :data:`TOLERANCE` of the centred sum
(``|mean| / std`` beyond about 50 for 1024 samples; also constant units) is done again, exactly:
its sorted values are shifted by its own median before the sums (the difference of two float32
values is exact in float64, and ``|mean - median| <= std``, so centring cancels at most one
bit). Either way the sums are float64-accurate: ``omega`` and ``beta`` to about 1e-9 relative
(worst case), 1e-13 typically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import FitError
from .maps import QUANTILE_LEVELS

__all__ = ["BLOCK_BYTES", "TOLERANCE", "PairMoments", "block_units", "sorted_pair_moments"]

#: Bytes of float32 per sample per block: 256 KiB (64 units of 1024 samples), so that a sorted
#: block and its float64 copy stay close to the core (L2 / L3 cache).
BLOCK_BYTES = 1 << 18

#: Largest relative error bound of a centred sum formed from raw float64 sums; units above it
#: are recomputed from median-shifted values.
TOLERANCE = 1e-9

_F32 = np.float32
_EPS64 = float(np.finfo(np.float64).eps) / 2  # unit roundoff, 2**-53


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
    refined : int
        Number of units recomputed from median-shifted values (see the module's docstring).
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
    refined: int


def block_units(n: int, m: int, width: int) -> int:
    """Units per block: :data:`BLOCK_BYTES` of float32 of the larger sample, at least 1."""
    return max(1, min(width, BLOCK_BYTES // (4 * max(n, m))))


class _Sample:
    """One sample (source or target) on its way through the blocks, with its scratch buffers.

    Per block it copies the units' columns transposed into a float32 buffer, sorts them, copies
    them into a float64 buffer (shifted by their medians if ``shift``), resamples them to the
    pairs if the sizes differ, and keeps per unit the extremes and the float64 sums.
    """

    def __init__(self, name: str, values: np.ndarray, pairs: int, step: int,
                 shift: bool) -> None:
        self.name = name
        self.values = values  # (size, D), any strides
        size, width = values.shape
        self.size, self.shift = size, shift
        self.sorted = np.empty((step, size), _F32)  # block scratch, unit-major
        self.wide = np.empty((step, size))  # block scratch, float64
        self.ones = np.ones(size)
        self.low, self.high = np.empty(width, _F32), np.empty(width, _F32)
        self.median = np.zeros(width)  # the shift of every unit (0 when not shifted)
        self.full_total = np.empty(width)  # sum of the (shifted) values, whole sample
        self.total = self.full_total if size == pairs else np.empty(width)  # ... over the pairs
        self.square = np.empty(width)  # sum of the squared (shifted) values over the pairs
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
        """Float64 values of sorted ``rows`` (shifted if asked), resampled to the pairs: (k, n)."""
        wide = self.wide[:rows.shape[0]]
        np.copyto(wide, rows)  # float32 -> float64, exact
        if self.shift:
            median = rows[:, self.size // 2].astype(np.float64)  # (k,)
            self.median[units] = median
            wide -= median[:, None]  # exact: a difference of two float32 values fits float64
        self.full_total[units] = _row_sums(wide, self.ones)  # (k,)
        paired = wide
        if self.pairing is not None:
            below, above, weight = self.pairing
            start = wide[:, below]  # (k, n)
            paired = start + weight * (wide[:, above] - start)  # (k, n), float64 interpolation
            self.total[units] = paired.sum(axis=1)
        self.square[units] = _row_dots(paired, paired)
        return paired

    def centred(self, pairs: int) -> np.ndarray:
        """``sum (x - xbar)^2`` over the pairs, per unit, from the raw sums."""
        return self.square - self.total * self.total / pairs

    def mean(self, pairs: int) -> np.ndarray:
        """Mean of the paired values, per unit."""
        return self.median + self.total / pairs

    def full_mean(self) -> np.ndarray:
        """Mean of the whole sample, per unit."""
        return self.median + self.full_total / self.size

    def update(self, units: np.ndarray, other: _Sample) -> None:
        """Take the sums of ``units`` from ``other``, a pass over just those units."""
        for name in ("median", "full_total", "total", "square"):
            getattr(self, name)[units] = getattr(other, name)

    def check_finite(self) -> None:
        """Raise FitError unless every value was finite (NaN sorts last, infinities at ends)."""
        good = np.isfinite(self.low) & np.isfinite(self.high)
        if good.all():
            return
        bad = np.flatnonzero(~good)
        raise FitError(f"{self.name} contains NaN or infinite values in {bad.size} unit(s) "
                       f"(first: unit {int(bad[0])}); check the model's numerics "
                       "(e.g. run it in float32)")


if hasattr(np, "vecdot"):  # NumPy >= 2.0: one single-threaded BLAS dot per row

    def _row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row dot products of two (k, n) float64 arrays, shape (k,)."""
        return np.vecdot(x, y)

    def _row_sums(x: np.ndarray, ones: np.ndarray) -> np.ndarray:
        """Row sums of a (k, n) float64 array, given ``ones`` of shape (n,): shape (k,)."""
        return np.vecdot(x, ones)

else:  # pragma: no cover - NumPy 1.x

    def _row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row dot products of two (k, n) float64 arrays, shape (k,)."""
        return np.matmul(x[:, None, :], y[:, :, None])[:, 0, 0]

    def _row_sums(x: np.ndarray, ones: np.ndarray) -> np.ndarray:
        """Row sums of a (k, n) float64 array, shape (k,)."""
        return x.sum(axis=1)


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


def _pass(a: _Sample, b: _Sample, step: int, columns: np.ndarray | None = None,
          picked: np.ndarray | None = None) -> np.ndarray:
    """Run the blocks over both samples; return the cross sums ``sum x y`` over the pairs, (D,).

    With ``columns``, also stores those sorted source columns of every unit in ``picked``.
    """
    width = a.values.shape[1]
    cross = np.empty(width)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is raised afterwards
        for first in range(0, width, step):
            units = slice(first, min(width, first + step))
            rows_a, rows_b = a.sort_block(units), b.sort_block(units)
            if picked is not None:
                np.take(rows_a, columns, axis=1, out=picked[units])
            x, y = a.paired_block(rows_a, units), b.paired_block(rows_b, units)  # (k, n) each
            cross[units] = _row_dots(x, y)
    return cross


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
    values_a, values_b = (x.detach().resolve_neg().numpy() for x in (source, target))  # views
    width = values_a.shape[1]
    n = min(values_a.shape[0], values_b.shape[0])
    step = block or block_units(values_a.shape[0], values_b.shape[0], width)
    a = _Sample("source", values_a, n, step, shift=False)
    b = _Sample("target", values_b, n, step, shift=False)
    columns, weight = _quantile_plan(levels, a.size)
    picked = np.empty((width, columns.size), _F32)  # source order statistics for the quantiles
    cross = _pass(a, b, step, columns, picked)
    a.check_finite()
    b.check_finite()
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx, syy = a.centred(n), b.centred(n)
        # relative error bound of the centred sums: n u (sum x^2) / sum (x - xbar)^2, and the
        # same for the cross sum with the geometric mean (Cauchy-Schwarz); NaN for constants
        bound = 3 * n * _EPS64 * np.maximum(a.square / sxx, b.square / syy)
        redo = np.flatnonzero(~(bound <= TOLERANCE) | ~(sxx > 0) | ~(syy > 0))
    if redo.size:  # ill-conditioned or constant units: again, exactly, from shifted values
        exact_a = _Sample("source", values_a[:, redo], n, step, shift=True)
        exact_b = _Sample("target", values_b[:, redo], n, step, shift=True)
        cross[redo] = _pass(exact_a, exact_b, step)
        a.update(redo, exact_a)
        b.update(redo, exact_b)
        sxx = a.centred(n)
    # centre the cross sums: sum (x - xbar)(y - ybar) = sum x y - (sum x)(sum y) / n
    sxy = cross - a.total * b.total / n
    count = columns.size // 2
    quantiles = torch.lerp(torch.from_numpy(picked[:, :count]), torch.from_numpy(picked[:, count:]),
                           weight)  # (D, K)
    return PairMoments(
        n=n, mean_a=a.mean(n), mean_b=b.mean(n), sxx=np.maximum(sxx, 0.0), sxy=sxy,
        full_mean_a=a.full_mean(), full_mean_b=b.full_mean(), lo=a.low, hi=a.high,
        range_b=b.high - b.low, quantiles=quantiles.t().contiguous(), refined=int(redo.size),
    )
