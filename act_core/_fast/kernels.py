"""Elementwise kernels of the transport: ``y = x + [lo <= x <= hi] (k x + b)``, or ``a x + b``.

The bounded transport needs four elementwise passes (clamp, compare, two multiply-adds). Done
over a whole activation tensor, each pass would stream it through main memory. On CPU the rows
are instead cut into small blocks (at most :data:`BLOCK_ELEMENTS` values, below torch's
intra-op grain so every op runs inline, without thread synchronisation) whose intermediates stay
in the core's cache; the blocks are spread over ``torch.get_num_threads()`` worker threads (torch
releases the GIL inside its ops). Only the input read and the output write touch main memory.
This is also robust when the CPU is oversubscribed, where per-op thread barriers are slow.
On accelerators the four passes run once over the whole tensor.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["BLOCK_ELEMENTS", "add_shift", "affine", "compute_dtype", "masked_shift"]

#: Upper bound on values per CPU block: torch runs elementwise ops on fewer than 32768 values
#: inline in the calling thread (128 KiB of float32, an L2-resident working set).
BLOCK_ELEMENTS = 32767
_TASKS_PER_WORKER = 4  # a few tasks per worker balance the load when a core is busy elsewhere

_executor: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)
_executor_lock = threading.Lock()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the transport computes in: float64 stays, every other float type uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared worker pool, rebuilt after a fork or a change of thread count."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor[:2] != (os.getpid(), workers):
            _executor = (os.getpid(), workers,
                         ThreadPoolExecutor(workers, thread_name_prefix="act_core"))
        return _executor[2]


def _block(x: torch.Tensor, out: torch.Tensor, k: torch.Tensor, b: torch.Tensor,
           bounds: tuple[torch.Tensor, torch.Tensor],
           scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """``out = x + [lo <= x <= hi] * (k * clamp(x, lo, hi) + b)`` for one block (R, D).

    All intermediates are floating point (torch's bool kernels are several times slower on CPU).
    The correction is computed from the clamped value, which is finite, so an infinite ``x``
    outside the support gets ``x + 0``.
    """
    work = x if x.dtype == k.dtype else x.to(k.dtype)
    rows = x.shape[0]
    clamped = None if scratch is None else scratch[0][:rows]
    inside = None if scratch is None else scratch[1][:rows]
    clamped = torch.clamp(work, bounds[0], bounds[1], out=clamped)  # (R, D)
    inside = torch.eq(clamped, work, out=inside)  # (R, D) 1.0 inside, 0.0 outside or NaN
    correction = torch.addcmul(b, clamped, k, out=clamped)  # (R, D), finite
    if work is x:
        torch.addcmul(x, inside, correction, out=out)
    else:
        out.copy_(torch.addcmul(work, inside, correction))


def _run_rows(x: torch.Tensor, out: torch.Tensor, k: torch.Tensor, b: torch.Tensor,
              bounds: tuple[torch.Tensor, torch.Tensor], start: int, stop: int,
              step: int) -> None:
    """Transport rows ``start:stop`` block by block, reusing one pair of scratch buffers."""
    scratch = (torch.empty(step, x.shape[1], dtype=k.dtype),
               torch.empty(step, x.shape[1], dtype=k.dtype))
    for first in range(start, stop, step):
        last = min(stop, first + step)
        _block(x[first:last], out[first:last], k, b, bounds, scratch)


def _run_rows_in_mode(modes: tuple[bool, bool], *args) -> None:
    """:func:`_run_rows` in a worker thread, under the calling thread's autograd modes."""
    inference, grad = modes
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        _run_rows(*args)


def affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``a * x + b`` (the unbounded support): one multiply-add kernel.

    Reduced-precision ``x`` is computed in the coefficients' dtype (float32) inside the same
    kernel and written back in the dtype of ``x``: no separate casts, one pass over memory.

    Parameters
    ----------
    x : Tensor, shape (..., D)
    a, b : Tensor, broadcastable to ``x`` (e.g. (D,) or (B, 1, ..., 1, D)), in
        :func:`compute_dtype` of ``x``.
    out : Tensor, shape of ``x``, dtype of ``x``, optional

    Returns
    -------
    Tensor, shape and dtype of ``x``.
    """
    if x.dtype == a.dtype:
        return torch.addcmul(b, x, a, out=out)
    if out is None:
        if torch.is_grad_enabled() and (x.requires_grad or a.requires_grad or b.requires_grad):
            return torch.addcmul(b, x.to(a.dtype), a).to(x.dtype)  # out= is not differentiable
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return torch.addcmul(b, x, a, out=out)


def add_shift(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Return ``x + delta`` (broadcasting) in the dtype of ``x``, computed in the dtype of
    ``delta``: for reduced-precision ``x`` one add kernel that casts on the fly (no separate
    cast of ``delta``, no rounding of it before the add)."""
    if x.dtype == delta.dtype:
        return x + delta
    if torch.is_grad_enabled() and (x.requires_grad or delta.requires_grad):
        return (x + delta).to(x.dtype)  # out= is not differentiable
    return torch.add(x, delta, out=torch.empty_like(x, memory_format=torch.contiguous_format))


def masked_shift(x: torch.Tensor, k: torch.Tensor, b: torch.Tensor,
                 bounds: tuple[torch.Tensor, torch.Tensor],
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x + [lo <= x <= hi] * (k * x + b)`` per unit (last dim).

    With ``k = lambda (omega - 1)`` and ``b = lambda beta`` this is the transport with strength
    lambda on a bounded support. Values outside the support, infinities and NaN are returned
    unchanged (``x + 0``; the only bit that can change is the sign of a ``-0.0`` lying outside a
    support that excludes 0). Reduced-precision inputs are computed in float32 and cast back.

    Parameters
    ----------
    x : Tensor, shape (R, D)
    k, b : Tensor, shape (D,)
        Coefficients in :func:`compute_dtype` of ``x``.
    bounds : (lo, hi), Tensors of shape (D,) in the compute dtype.
    out : Tensor, shape (R, D), dtype of ``x``, contiguous, optional
        Destination (may not overlap ``x``).

    Returns
    -------
    Tensor, shape (R, D), dtype of ``x``.
    """
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows, width = x.shape
    if x.device.type != "cpu":
        _block(x, out, k, b, bounds)  # the accelerator's kernels, over the whole tensor
        return out
    step = max(1, BLOCK_ELEMENTS // max(1, width))
    workers = torch.get_num_threads()
    tasks = min(-(-rows // step), workers * _TASKS_PER_WORKER)
    if workers < 2 or tasks < 2:
        _run_rows(x, out, k, b, bounds, 0, rows, step)
        return out
    per_task = -(-rows // tasks)
    # inference mode and grad mode are thread-local: carry the caller's into the workers
    modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
    futures = [_pool(workers).submit(_run_rows_in_mode, modes, x, out, k, b, bounds, first,
                                     min(rows, first + per_task), step)
               for first in range(0, rows, per_task)]
    for future in futures:
        future.result()
    return out
