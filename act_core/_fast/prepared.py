"""Per-call fast path of the hooks: the transport of one site, prepared once per input shape.

:func:`act_core.transport.transport` and :func:`~act_core.transport.transport_channels` are the
readable formula. Each of their calls validates the strength, looks its coefficients up and
chooses a kernel path: a few microseconds of Python per site and call. A sampler on an
accelerator calls a 2.6 B-parameter UNet with hundreds of sites at every step, and there that
host time is the overhead (the host, not the device, sets the pace). :func:`prepare` makes those
decisions once for a site, a fixed strength and an input's shape, dtype and device, and returns a
function that only launches the kernels: one multiply-add for element-wise maps, a channel mean,
a multiply-add and an add for channel maps. The results are the same, bit for bit.

Cases that need the general code (bounded supports with per-item strengths, CPU tensors that the
transport cuts into inline blocks, other layouts, gated maps) get ``None``, and the caller uses
the formula's functions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from act_core._fast.kernels import add_shift, affine, compute_dtype, masked_shift
from act_core.maps import TransportMap
from act_core.support import SupportLike
from act_core.transport import (
    _affine_coefficients,
    _channel_coefficients,
    _inline_step,
    _is_unbounded,
    _prepared,
    _row_coefficients,
)

__all__ = ["Prepared", "prepare", "prepares"]

_MODES = ("tokens", "vector", "channels")  # the layouts prepared here

#: Transport of one site's output for one shape: ``y = run(x)``; ``None`` means "unchanged".
Prepared = Callable[[torch.Tensor], "torch.Tensor | None"]


def prepares(tmap: TransportMap) -> bool:
    """Whether :func:`prepare` handles this map's layout (other layouts and gated maps take the
    general path)."""
    return tmap.mode in _MODES and getattr(tmap, "gate", None) is None


def _unchanged(x: torch.Tensor) -> None:
    return None


def prepare(x: torch.Tensor, tmap: TransportMap, lam: float | list[float],
            support: SupportLike) -> Prepared | None:
    """The transport of tensors shaped like ``x`` with a checked strength, or None.

    Parameters
    ----------
    x : Tensor
        An output of the site: (..., D) for ``tokens``/``vector`` maps, (B, C, *spatial) for
        ``channels`` maps; its width has been checked against the map.
    tmap : TransportMap
        The map, on ``x``'s device.
    lam : float or list of B floats
        Strength(s) validated by :func:`~act_core.strength.check_strength`.
    support : str, tuple or Support

    Returns
    -------
    A function of one tensor of the same shape, dtype and device, or None where only the
    general path applies.
    """
    if not prepares(tmap):
        return None
    if isinstance(lam, list) and len(set(lam)) == 1:
        lam = lam[0]
    if not isinstance(lam, list) and lam == 0.0:
        return _unchanged
    dtype = compute_dtype(x.dtype)
    if tmap.mode == "channels":
        return _prepare_channels(x, tmap, lam, support, dtype)
    if _inline_step(x, x.shape[-1]) is not None:
        return None  # CPU blocks: the general path
    if not isinstance(lam, list):
        bounds, first, second = _prepared(tmap, ("rows", lam, dtype, x.device, support),
                                          lambda: _row_coefficients(tmap, lam, support, dtype,
                                                                    x.device))
        if bounds is None:
            return lambda y: affine(y, first, second)
        if x.device.type == "cpu":
            return None
        width = x.shape[-1]
        return lambda y: masked_shift(y.reshape(-1, width), first, second, bounds).view(y.shape)
    if not _is_unbounded(support):
        return None
    a, b = _affine_coefficients(x, tmap, lam, dtype)
    return lambda y: affine(y, a, b)


def _prepare_channels(x: torch.Tensor, tmap: TransportMap, lam: float | list[float],
                      support: SupportLike, dtype: torch.dtype) -> Prepared | None:
    if x.device.type == "cpu" and torch.get_num_threads() > 1 and x.is_contiguous():
        spatial = x[0, 0].numel()
        if _inline_step(x, spatial) is not None:
            return None  # CPU blocks: the general path
    key = ("channels", lam if not isinstance(lam, list) else tuple(lam), dtype, x.device,
           support)
    k, c, keep, bounds, pure = _prepared(tmap, key, lambda: _channel_coefficients(
        tmap, lam, support, dtype, x.device))
    ones = (1,) * (x.ndim - 2)
    dims = tuple(range(2, x.ndim))
    if pure:
        delta = c if keep is None else torch.where(keep, c, -0.0)  # (B|1, C)
        delta = delta.view(delta.shape[0], delta.shape[1], *ones)
        return lambda y: add_shift(y, delta)
    if bounds is None and keep is None:
        def run(y: torch.Tensor) -> torch.Tensor:
            delta = torch.addcmul(c, k, y.mean(dim=dims, dtype=dtype))  # (B|1, C)
            return add_shift(y, delta.view(delta.shape[0], delta.shape[1], *ones))
        return run

    def run_masked(y: torch.Tensor) -> torch.Tensor:
        mu = y.mean(dim=dims, dtype=dtype)  # (B, C)
        delta = torch.addcmul(c, k, mu)
        mask = keep
        if bounds is not None:
            inside = torch.eq(torch.clamp(mu, *bounds), mu)
            mask = inside if mask is None else mask & inside
        delta = torch.where(mask, delta, -0.0)  # x + (-0.0) == x bit for bit
        return add_shift(y, delta.view(delta.shape[0], delta.shape[1], *ones))
    return run_masked
