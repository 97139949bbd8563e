"""Applying a fitted map to activations, with a strength lambda.

For every unit, ``y = x + lambda * mask * ((omega - 1) x + beta)``, i.e. ``(1 - lambda) x +
lambda T(x)`` inside the support and ``x`` outside. ``lambda = 0`` is the model as it is,
``lambda = 1`` fully transports, ``lambda > 1`` extrapolates along the same line. The strength
and its bounds are :mod:`act_core.strength`: negative strengths are refused (to transport target
-> source apply ``tmap.inverse()``, or fit with source and target swapped).

Strength is a number or a tensor of shape (B,) with one strength per batch item (dim 0 of the
activation), e.g. to transport only the conditional half of a CFG batch.

CPU activations of at most :data:`INLINE_ELEMENTS` values are transported in the calling thread,
in blocks of at most ``kernels.BLOCK_ELEMENTS`` values, so that every op runs inline (below
torch's intra-op grain). At such sizes (a diffusion UNet at low resolution) one parallel op costs
more in thread hand-off than in work, and far more when other processes load the CPU: a thread
barrier then waits for a descheduled worker. Larger tensors use whole-tensor ops as before.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch

from ._fast import kernels
from ._fast.kernels import add_shift, affine, compute_dtype, masked_shift
from .errors import MapCompatibilityError
from .maps import TransportMap
from .strength import StrengthLike, check_strength
from .support import SupportLike, parse_support, support_bounds

__all__ = ["INLINE_ELEMENTS", "fold", "transport", "transport_channels"]

#: CPU activations with at most this many values are transported inline, block by block (1 MiB
#: of float32): a few blocks of inline ops, against one parallel op per step otherwise.
INLINE_ELEMENTS = 1 << 18

_T = TypeVar("_T")
_PREPARED: dict[int, dict[tuple, object]] = {}  # id(map) -> key -> coefficients
_PREPARED_PER_MAP = 64  # keys kept per map (strengths x dtypes x devices x supports)


def _inline_step(x: torch.Tensor, width: int) -> int | None:
    """Rows of ``width`` values per inline block for ``x``; None to use whole-tensor ops.

    With one torch thread every op runs inline anyway: whole-tensor ops, fewer calls. Inline
    blocks write into preallocated outputs (``out=``), which autograd refuses: a tensor that
    requires grad under grad mode takes the whole-tensor path.
    """
    if (x.device.type != "cpu" or not kernels.BLOCK_ELEMENTS < x.numel() <= INLINE_ELEMENTS
            or torch.get_num_threads() < 2 or (x.requires_grad and torch.is_grad_enabled())):
        return None
    return max(1, kernels.BLOCK_ELEMENTS // max(1, width))


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
    unbounded = _is_unbounded(support)
    if not isinstance(lam, list):
        if lam == 0.0:
            return x
        if unbounded and _inline_step(x, x.shape[-1]) is None:
            dtype = compute_dtype(x.dtype)
            a, b = _prepared(tmap, ("affine", lam, dtype, x.device),
                             lambda: fold(tmap, lam, dtype, x.device))  # (D,)
            return affine(x, a, b)  # one multiply-add, broadcast over the last dim
        return _transport_rows(x, tmap, lam, support)
    if unbounded:
        return _affine_items(x, tmap, lam)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for index, value in enumerate(lam):
        if value == 0.0:
            out[index].copy_(x[index])
        else:
            _transport_rows(x[index], tmap, value, support, out[index])
    return out


def _is_unbounded(support: SupportLike) -> bool:
    try:
        return _unbounded_cached(support)
    except TypeError:  # unhashable
        return parse_support(support).kind == "unbounded"


@functools.lru_cache(maxsize=64)
def _unbounded_cached(support: SupportLike) -> bool:
    return parse_support(support).kind == "unbounded"


def _prepared(tmap: TransportMap, key: tuple, build: Callable[[], _T]) -> _T:
    """Coefficients derived from ``tmap`` for ``key``, computed once and kept with the map.

    A sampler transports the same sites with the same strength at every step; maps are never
    modified, so what is derived from them (folded coefficients, bounds) is cached per map
    (dropped when the map is garbage-collected) and per key (strength, dtype, device...).
    """
    per_map = _PREPARED.get(id(tmap))
    if per_map is None:
        per_map = _PREPARED[id(tmap)] = {}
        weakref.finalize(tmap, _PREPARED.pop, id(tmap), None)
    try:
        value = per_map.get(key)
    except TypeError:  # an unhashable key part (a support given as a list): no cache
        return build()
    if value is None:
        if len(per_map) >= _PREPARED_PER_MAP:
            per_map.clear()
        value = per_map[key] = build()
    return value


def _affine_coefficients(x: torch.Tensor, tmap: TransportMap, lam: list[float],
                         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item ``a`` and ``b``, (B, 1, ..., 1, D) in ``dtype``; an item of strength 0 gets
    ``a = 1``, ``b = -0.0`` (``x * 1 + -0.0`` is ``x`` bit for bit)."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.ones(len(lam), tmap.dim, dtype=dtype, device=x.device), torch.full(
            (len(lam), tmap.dim), -0.0, dtype=dtype, device=x.device)  # (B, D)
        for index, value in enumerate(lam):
            if value != 0.0:
                a[index], b[index] = fold(tmap, value, dtype, x.device)
        shape = (len(lam), *([1] * (x.ndim - 2)), tmap.dim)  # (B, 1, ..., 1, D)
        return a.view(shape), b.view(shape)

    return _prepared(tmap, ("items", tuple(lam), dtype, x.device, x.ndim), build)


def _affine_items(x: torch.Tensor, tmap: TransportMap, lam: list[float]) -> torch.Tensor:
    """Unbounded transport with one strength per item of dim 0: one multiply-add over ``x``
    with per-item coefficients."""
    a, b = _affine_coefficients(x, tmap, lam, compute_dtype(x.dtype))
    if _inline_step(x, x.shape[-1]) is None:
        return affine(x, a, b)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for index in range(x.shape[0]):  # items as blocks, each op inline when small enough
        affine(x[index], a[index], b[index], out=out[index])
    return out


def _transport_rows(x: torch.Tensor, tmap: TransportMap, lam: float, support: SupportLike,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    dtype = compute_dtype(x.dtype)
    rows = x.reshape(-1, x.shape[-1])  # (R, D)
    dest = None if out is None else out.view(-1, x.shape[-1])  # (R, D), out is contiguous
    bounds, first, second = _prepared(tmap, ("rows", lam, dtype, x.device, support),
                                      lambda: _row_coefficients(tmap, lam, support, dtype,
                                                                x.device))
    if bounds is None:  # first, second = a, b

        def run(r: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            return affine(r, first, second, out=o)
    else:  # first, second = k, b

        def run(r: torch.Tensor, o: torch.Tensor | None) -> torch.Tensor:
            return masked_shift(r, first, second, bounds, out=o)
    step = _inline_step(rows, rows.shape[1])
    if step is None:
        return run(rows, dest).view(x.shape)
    if dest is None:
        dest = torch.empty_like(rows, memory_format=torch.contiguous_format)
    for start in range(0, rows.shape[0], step):
        run(rows[start:start + step], dest[start:start + step])  # (step, D) inline
    return dest.view(x.shape)


def _row_coefficients(tmap: TransportMap, lam: float, support: SupportLike, dtype: torch.dtype,
                      device: torch.device) -> tuple:
    """``(None, a, b)`` for the unbounded support, else ``(bounds, k, b)``; each (D,)."""
    bounds = _bounds(tmap, support, dtype, device)
    if bounds is None:
        return (None, *fold(tmap, lam, dtype, device))
    return (bounds, *_deltas(tmap, lam, dtype, device))


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
    key = ("channels", lam if not isinstance(lam, list) else tuple(lam), dtype, x.device,
           support)
    k, c, keep, bounds, pure = _prepared(tmap, key, lambda: _channel_coefficients(
        tmap, lam, support, dtype, x.device))
    step = rows = None
    if torch.get_num_threads() > 1 and x.is_contiguous():
        spatial = math.prod(x.shape[2:])
        step = _inline_step(x, spatial)
        rows = x.view(-1, spatial) if step is not None else None  # (B * C, S)
    if pure:
        delta = c  # (B, C) or (1, C): a pure shift needs no channel mean
    else:
        mu = _channel_means(x, rows, step, dtype)  # (B, C)
        delta = torch.addcmul(c, k, mu)  # lambda ((omega - 1) mu + beta), (B, C)
        if bounds is not None:
            inside = torch.eq(torch.clamp(mu, *bounds), mu)  # (B, C)
            keep = inside if keep is None else keep & inside
    if keep is not None:
        delta = torch.where(keep, delta, -0.0)  # x + (-0.0) == x bit for bit
    if rows is None:  # (B|1, C, 1, ..., 1)
        return add_shift(x, delta.view(delta.shape[0], delta.shape[1], *((1,) * (x.ndim - 2))))
    if delta.dtype != x.dtype:
        delta = delta.to(x.dtype)
    column = delta.expand(x.shape[0], -1).reshape(-1, 1)  # (B * C, 1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    dest = out.view(-1, spatial)
    for start in range(0, rows.shape[0], step):
        block = slice(start, start + step)
        torch.add(rows[block], column[block], out=dest[block])  # (step, S) inline
    return out


def _channel_coefficients(tmap: TransportMap, lam: float | list[float], support: SupportLike,
                          dtype: torch.dtype, device: torch.device) -> tuple:
    """``(k, c, keep, bounds, pure)``: ``k = lambda (omega - 1)`` and ``c = lambda beta``,
    (B, C) or (1, C); ``keep`` (B, 1) when some item has strength 0, else None; the support
    bounds or None; ``pure`` when no channel mean is needed (omega = 1, unbounded)."""
    lam_t = torch.tensor(lam, dtype=torch.float64, device=device).reshape(-1, 1)  # (B|1, 1)
    scale = tmap.scale.to(device=device, dtype=torch.float64)
    k = (lam_t * (scale - 1.0)).to(dtype)
    c = (lam_t * tmap.shift.to(device=device, dtype=torch.float64)).to(dtype)
    keep = (lam_t > 0) if bool((lam_t == 0).any()) else None
    bounds = _bounds(tmap, support, dtype, device)
    pure = bounds is None and bool(torch.all(scale == 1.0))
    return k, c, keep, bounds, pure


def _channel_means(x: torch.Tensor, rows: torch.Tensor | None, step: int | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """Spatial means (B, C) of ``x`` (B, C, *spatial); ``rows`` is its (B * C, S) view when
    the means are taken inline, ``step`` rows at a time."""
    if rows is None:
        return x.mean(dim=tuple(range(2, x.ndim)), dtype=dtype)
    mu = torch.empty(rows.shape[0], dtype=dtype, device=x.device)  # (B * C,)
    for start in range(0, rows.shape[0], step):
        torch.mean(rows[start:start + step], dim=1, dtype=dtype, out=mu[start:start + step])
    return mu.view(x.shape[0], x.shape[1])
