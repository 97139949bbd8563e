"""Applying a fitted map to activations, with a strength lambda.

For every unit, ``y = x + lambda * mask * ((omega - 1) x + beta)``, i.e. ``(1 - lambda) x +
lambda T(x)`` inside the support and ``x`` outside. ``lambda = 0`` is the model as it is,
``lambda = 1`` fully transports, ``lambda > 1`` extrapolates along the same line (a warning is
logged once past :data:`EXTRAPOLATION_BOUND`, except for ``unbounded_strength`` maps such as
``diff_means``). Negative strengths are refused: to transport target -> source apply
``tmap.inverse()`` (or fit with source and target swapped).

Strength is a number or a tensor of shape (B,) with one strength per batch item (dim 0 of the
activation), e.g. to transport only the conditional half of a CFG batch.

CPU activations of at most :data:`INLINE_ELEMENTS` values are transported in the calling thread,
in blocks of at most ``kernels.BLOCK_ELEMENTS`` values, so that every op runs inline (below
torch's intra-op grain). At such sizes (a diffusion UNet at low resolution) one parallel op costs
more in thread hand-off than in work, and far more when other processes load the CPU: a thread
barrier then waits for a descheduled worker. Larger tensors use whole-tensor ops as before.
"""

from __future__ import annotations

import logging
import math

import torch

from . import kernels
from .errors import MapCompatibilityError, StrengthError
from .kernels import affine, compute_dtype, masked_shift
from .maps import TransportMap
from .support import SupportLike, support_bounds

__all__ = [
    "EXTRAPOLATION_BOUND", "INLINE_ELEMENTS", "StrengthLike", "check_strength", "fold",
    "transport", "transport_channels",
]

logger = logging.getLogger(__name__)

#: Strengths above this log a warning (once per process) unless the map is unbounded_strength.
EXTRAPOLATION_BOUND = 2.0

#: CPU activations with at most this many values are transported inline, block by block (1 MiB
#: of float32): a few blocks of inline ops, against one parallel op per step otherwise.
INLINE_ELEMENTS = 1 << 18

StrengthLike = float | int | torch.Tensor
_warned: set[str] = set()


def _inline_step(x: torch.Tensor, width: int) -> int | None:
    """Rows of ``width`` values per inline block for ``x``; None to use whole-tensor ops.

    Inline blocks write into preallocated outputs (``out=``), which autograd refuses: a tensor
    that requires grad under grad mode takes the whole-tensor path.
    """
    if (x.device.type != "cpu" or not kernels.BLOCK_ELEMENTS < x.numel() <= INLINE_ELEMENTS
            or (x.requires_grad and torch.is_grad_enabled())):
        return None
    return max(1, kernels.BLOCK_ELEMENTS // max(1, width))


def _warn_extrapolation(value: float, tmap: TransportMap) -> None:
    if value > EXTRAPOLATION_BOUND and not tmap.unbounded_strength and "extrapolate" not in _warned:
        _warned.add("extrapolate")
        logger.warning("strength %.3g > %.1f extrapolates the %s map far beyond the target "
                       "distribution; outputs may degrade (this warning is shown once)",
                       value, EXTRAPOLATION_BOUND, tmap.method)


def check_strength(strength: StrengthLike, batch: int | None, tmap: TransportMap
                   ) -> float | list[float]:
    """Validate a strength and return it as a float or a list of B floats.

    Parameters
    ----------
    strength : float or Tensor, shape () or (B,)
    batch : int or None
        Size B of the activation's dim 0, required for per-item strengths.
    tmap : TransportMap
        The map (for the extrapolation warning).

    Raises
    ------
    StrengthError
        Non-finite or negative strength, a (B,) tensor whose length is not ``batch``.
    """
    if isinstance(strength, torch.Tensor):
        if strength.ndim > 1 or (strength.ndim == 1 and strength.shape[0] != batch):
            raise StrengthError(f"a strength tensor must have shape () or (B,) = ({batch},), "
                                f"found {tuple(strength.shape)}")
        values = strength.detach().to("cpu", torch.float64).reshape(-1).tolist()
    elif isinstance(strength, (int, float)) and not isinstance(strength, bool):
        values = [float(strength)]
    else:
        raise StrengthError(f"strength must be a number or a tensor, "
                            f"found {type(strength).__name__}")
    for value in values:
        if not math.isfinite(value):
            raise StrengthError(f"strength must be finite, found {value}")
        if value < 0:
            raise StrengthError(f"strength must be >= 0, found {value:g}; to transport target -> "
                                "source apply tmap.inverse() with a positive strength, or fit "
                                "with source and target swapped")
    _warn_extrapolation(max(values), tmap)
    if isinstance(strength, torch.Tensor) and strength.ndim == 1:
        return values
    return values[0]


def fold(tmap: TransportMap, strength: float, dtype: torch.dtype = torch.float32,
         device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a strength into coefficients ``a = 1 + lambda (omega - 1)`` and ``b = lambda beta``.

    Inside the support the transport is then ``y = a x + b``. Computed in float64, returned in
    ``dtype``. Returns two tensors of shape (D,).
    """
    k, b = _deltas(tmap, strength, torch.float64, device)
    return (1.0 + k).to(dtype), b.to(dtype)


def _deltas(tmap: TransportMap, strength: float, dtype: torch.dtype,
            device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k = lambda (omega - 1)`` and ``b = lambda beta`` (D,), computed in float64."""
    scale = tmap.scale.to(device=device, dtype=torch.float64)
    shift = tmap.shift.to(device=device, dtype=torch.float64)
    return (strength * (scale - 1.0)).to(dtype), (strength * shift).to(dtype)


def _bounds(tmap: TransportMap, support: SupportLike, dtype: torch.dtype, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor] | None:
    bounds = support_bounds(tmap, support)
    if bounds is None:
        return None
    return bounds[0].to(device=device, dtype=dtype), bounds[1].to(device=device, dtype=dtype)


def _check_width(x: torch.Tensor, width: int, tmap: TransportMap, what: str) -> None:
    if width != tmap.dim:
        raise MapCompatibilityError(f"{what} has {width} units but the map has D={tmap.dim}; "
                                    "apply the map to the site it was fitted on")


def transport(x: torch.Tensor, tmap: TransportMap, strength: StrengthLike = 1.0,
              support: SupportLike = "minmax") -> torch.Tensor:
    """Transport activations elementwise (token / vector mode).

    Parameters
    ----------
    x : Tensor, shape (..., D)
        Activations; per-item strengths index dim 0 (e.g. (B, T, D) or (B, D)).
    tmap : TransportMap
        Map with ``dim == D``.
    strength : float or Tensor, shape (B,)
        lambda >= 0. Zero returns ``x`` itself (bit-identical); items of strength 0 are copied.
    support : str, tuple or Support
        See :mod:`act_core.support`.

    Returns
    -------
    Tensor, same shape and dtype as ``x``. Values outside the support (and infinities, NaN)
    keep their value (they receive ``+ 0``; a ``-0.0`` outside a support that excludes 0 may
    come back as ``+0.0``, which compares equal).
    """
    if x.ndim == 0:
        raise MapCompatibilityError("cannot transport a 0-d tensor; expected shape (..., D)")
    _check_width(x, x.shape[-1], tmap, "the input's last dim")
    lam = check_strength(strength, x.shape[0] if x.ndim > 1 else None, tmap)
    if isinstance(lam, list) and len(set(lam)) == 1:
        lam = lam[0]
    if not isinstance(lam, list):
        if lam == 0.0:
            return x
        return _transport_rows(x, tmap, lam, support)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for index, value in enumerate(lam):
        if value == 0.0:
            out[index].copy_(x[index])
        else:
            _transport_rows(x[index], tmap, value, support, out[index])
    return out


def _transport_rows(x: torch.Tensor, tmap: TransportMap, lam: float, support: SupportLike,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    dtype = compute_dtype(x.dtype)
    rows = x.reshape(-1, x.shape[-1])  # (R, D)
    dest = None if out is None else out.view(-1, x.shape[-1])  # (R, D), out is contiguous
    bounds = _bounds(tmap, support, dtype, x.device)
    if bounds is None:
        a, b = fold(tmap, lam, dtype, x.device)

        def run(r: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            return affine(r, a, b, out=o)
    else:
        k, b = _deltas(tmap, lam, dtype, x.device)

        def run(r: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            return masked_shift(r, k, b, bounds, out=o)
    step = _inline_step(rows, rows.shape[1])
    if step is None:
        return run(rows, dest).view(x.shape)
    if dest is None:
        dest = torch.empty_like(rows, memory_format=torch.contiguous_format)
    for first in range(0, rows.shape[0], step):
        run(rows[first:first + step], dest[first:first + step])  # (step, D) inline
    return dest.view(x.shape)


def transport_channels(x: torch.Tensor, tmap: TransportMap, strength: StrengthLike = 1.0,
                       support: SupportLike = "minmax") -> torch.Tensor:
    """Transport feature maps in channel-mean mode (the paper's mode for diffusion UNets).

    With ``mu[b, c]`` the spatial mean of channel c of item b, every value of the channel is
    shifted by the same amount, so the spatial pattern is kept::

        y[b, c] = x[b, c] + lambda_b * mask(mu[b, c]) * ((omega_c - 1) mu[b, c] + beta_c)

    Parameters
    ----------
    x : Tensor, shape (B, C, *spatial) with C == D (e.g. (B, C, H, W))
    tmap : TransportMap
    strength : float or Tensor, shape (B,)
    support : str, tuple or Support
        Tested against the channel means ``mu``.

    Returns
    -------
    Tensor, same shape and dtype as ``x``; channels outside the support (and items of
    strength 0) are copied bit for bit (they receive ``+ -0.0``).
    """
    if x.ndim < 3:
        raise MapCompatibilityError(f"channel mode expects (B, C, *spatial), "
                                    f"found shape {tuple(x.shape)}")
    _check_width(x, x.shape[1], tmap, "the input's channel dim")
    lam = check_strength(strength, x.shape[0], tmap)
    if not isinstance(lam, list) and lam == 0.0:
        return x
    dtype = compute_dtype(x.dtype)
    lam_t = torch.tensor(lam, dtype=dtype, device=x.device).reshape(-1, 1)  # (B, 1) or (1, 1)
    scale = tmap.scale.to(x.device, dtype)
    shift = tmap.shift.to(x.device, dtype)
    bounds = _bounds(tmap, support, dtype, x.device)
    spatial = math.prod(x.shape[2:])
    step = _inline_step(x, spatial) if x.is_contiguous() else None
    rows = x.view(-1, spatial) if step is not None else None  # (B * C, S)
    keep = lam_t > 0
    if bounds is None and bool(torch.all(scale == 1.0)):
        delta = lam_t * shift  # (B, C) or (1, C): a pure shift needs no channel mean
    else:
        mu = _channel_means(x, rows, step, dtype)  # (B, C)
        delta = lam_t * ((scale - 1.0) * mu + shift)  # (B, C)
        if bounds is not None:
            keep = keep & torch.eq(torch.clamp(mu, *bounds), mu)
    delta = torch.where(keep, delta, -0.0).to(x.dtype)  # x + (-0.0) == x bit for bit
    delta = delta.expand(x.shape[0], -1)  # (B, C)
    if rows is None:
        return x + delta.reshape(*delta.shape, *([1] * (x.ndim - 2)))  # (B, C, 1, ..., 1)
    column = delta.reshape(-1, 1)  # (B * C, 1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    dest = out.view(-1, spatial)
    for first in range(0, rows.shape[0], step):
        block = slice(first, first + step)
        torch.add(rows[block], column[block], out=dest[block])  # (step, S) inline
    return out


def _channel_means(x: torch.Tensor, rows: torch.Tensor | None, step: int | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """Spatial means (B, C) of ``x`` (B, C, *spatial); ``rows`` is its (B * C, S) view when
    the means are taken inline, ``step`` rows at a time."""
    if rows is None:
        return x.mean(dim=tuple(range(2, x.ndim)), dtype=dtype)
    mu = torch.empty(rows.shape[0], dtype=dtype, device=x.device)  # (B * C,)
    for first in range(0, rows.shape[0], step):
        torch.mean(rows[first:first + step], dim=1, dtype=dtype, out=mu[first:first + step])
    return mu.view(x.shape[0], x.shape[1])
