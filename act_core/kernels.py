"""Elementwise kernels of the transport: ``y = a x + b`` where ``lo <= x <= hi``, else ``x``.

The masked affine map needs several elementwise passes (bounds test, affine, select). Done over a
whole activation tensor, each pass streams it through main memory. Here the rows are processed in
chunks of about :data:`CHUNK_ELEMENTS` values, so the intermediates stay in the CPU cache and only
the input read and the output write touch main memory. On accelerators the passes run unchunked.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK_ELEMENTS", "compute_dtype", "masked_affine"]

#: Values per chunk on CPU (float32: 2 MiB). A chunk, its clamped copy, its mask and its output
#: (about 6.5 MiB) stay in a shared L3 cache, while each elementwise op still gets enough work
#: to amortise its dispatch and thread synchronisation.
CHUNK_ELEMENTS = 1 << 19


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the transport computes in: float64 stays, every other float type uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Scratch:
    """Reusable per-call buffers for one chunk: the clamped values and the inside mask."""

    def __init__(self, rows: int, width: int, dtype: torch.dtype, device: torch.device) -> None:
        self.clamped = torch.empty(rows, width, dtype=dtype, device=device)
        self.inside = torch.empty(rows, width, dtype=torch.bool, device=device)


def _chunk_inplace(x: torch.Tensor, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   bounds: tuple[torch.Tensor, torch.Tensor] | None,
                   scratch: _Scratch | None = None) -> None:
    """Transport one block ``x`` (R, D) into ``out`` (R, D); coefficients (D,) in compute dtype."""
    work = x if x.dtype == a.dtype else x.to(a.dtype)
    if bounds is None:
        if work is x:
            torch.addcmul(b, work, a, out=out)
        else:
            out.copy_(torch.addcmul(b, work, a))
        return
    rows = x.shape[0]
    clamped = None if scratch is None else scratch.clamped[:rows]
    inside = None if scratch is None else scratch.inside[:rows]
    clamped = torch.clamp(work, bounds[0], bounds[1], out=clamped)
    inside = torch.eq(clamped, work, out=inside)  # (R, D) bool; NaN is outside
    if work is x:
        torch.addcmul(b, work, a, out=out)
        torch.where(inside, out, x, out=out)
    else:
        torch.where(inside, torch.addcmul(b, work, a).to(x.dtype), x, out=out)


def masked_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  bounds: tuple[torch.Tensor, torch.Tensor] | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``where(lo <= x <= hi, a * x + b, x)`` computed per unit (last dim).

    Values outside the bounds (and NaN) are copied bit for bit. Reduced-precision inputs are
    computed in float32 and cast back.

    Parameters
    ----------
    x : Tensor, shape (R, D)
    a, b : Tensor, shape (D,)
        Folded coefficients in :func:`compute_dtype` of ``x``.
    bounds : (lo, hi) of Tensors of shape (D,) in the compute dtype, or None for everywhere.
    out : Tensor, shape (R, D), dtype of ``x``, optional
        Destination (may not overlap ``x``).

    Returns
    -------
    Tensor, shape (R, D), dtype of ``x``.
    """
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows = x.shape[0]
    if x.device.type != "cpu" or rows == 0:
        _chunk_inplace(x, out, a, b, bounds)
        return out
    step = max(1, CHUNK_ELEMENTS // max(1, x.shape[1]))
    if bounds is None and x.dtype == a.dtype:
        step = rows  # a single addcmul streams once; chunking gains nothing
    scratch = None if bounds is None else _Scratch(min(step, rows), x.shape[1], a.dtype, x.device)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        _chunk_inplace(x[start:stop], out[start:stop], a, b, bounds, scratch)
    return out
