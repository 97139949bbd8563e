"""Elementwise kernels of the transport: ``y = a x + b`` where ``lo <= x <= hi``, else ``x``.

The masked affine map needs several elementwise passes (bounds test, affine, select). Done over a
whole activation tensor, each pass streams it through main memory. Here the rows are processed in
chunks of about :data:`CHUNK_ELEMENTS` values, so the intermediates stay in the CPU cache and only
the input read and the output write touch main memory. On accelerators the passes run unchunked.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK_ELEMENTS", "compute_dtype", "masked_affine"]

#: Values per chunk on CPU (float32: 512 KiB, a per-core L2 cache).
CHUNK_ELEMENTS = 1 << 17


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the transport computes in: float64 stays, every other float type uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_inplace(x: torch.Tensor, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   bounds: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Transport one block ``x`` (R, D) into ``out`` (R, D); coefficients (D,) in compute dtype."""
    work = x if x.dtype == a.dtype else x.to(a.dtype)
    if bounds is None:
        if work is x:
            torch.addcmul(b, work, a, out=out)
        else:
            out.copy_(torch.addcmul(b, work, a))
        return
    lo, hi = bounds
    inside = torch.eq(torch.clamp(work, lo, hi), work)  # (R, D) bool; NaN is outside
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
    if x.device.type != "cpu":
        _chunk_inplace(x, out, a, b, bounds)
        return out
    step = max(1, CHUNK_ELEMENTS // max(1, x.shape[1]))
    if bounds is None and x.dtype == a.dtype:
        step = rows  # a single addcmul streams once; chunking gains nothing
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        _chunk_inplace(x[start:stop], out[start:stop], a, b, bounds)
    return out
