"""The benchmarks' one timing harness: time, repeat with alternation, median, ratio, docs section.

Every benchmark that times something measures a candidate against a floor in the same process,
with the variants alternated (the order rotates from repeat to repeat, so that load from other
jobs and the machine's drift fall on all of them alike), and reports medians and ratios:

    times = alternate({"plain": plain, "act": act}, repeats=5)   # {name: [Clocks, ...]}
    cpu, ratio, paired = ratios(times["act"], times["plain"], "cpu")
    write_section(Path("docs/results.md"), f"{BEGIN}\\n...table...\\n{END}\\n", BEGIN, END)

Clocks are the process CPU time, the wall time and the CPU time of the calling thread
(``time.process_time``, ``time.perf_counter``, ``time.thread_time``), in seconds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["Clocks", "alternate", "cpu_name", "load_average", "median", "ratios", "rotation",
           "timed", "write_section"]


class Clocks(NamedTuple):
    """Seconds one call took: process CPU, wall, CPU of the calling thread."""

    cpu: float
    wall: float
    thread: float


def _sync(device) -> None:
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device=None) -> Clocks:
    """The :class:`Clocks` of one call of ``fn()``.

    With a CUDA ``device``, the device is drained before and after, so the wall time includes
    the queued kernels; a thread time close to the wall time then says the host (Python and
    kernel launches) sets the pace, not the device.
    """
    _sync(device)
    cpu, wall, thread = time.process_time(), time.perf_counter(), time.thread_time()
    fn()
    _sync(device)
    return Clocks(time.process_time() - cpu, time.perf_counter() - wall,
                  time.thread_time() - thread)


def rotation(names: Sequence[str], repeat: int) -> list[str]:
    """The order of the variants in repeat ``repeat``: rotated by one place per repeat."""
    turn = repeat % len(names)
    return [*names[turn:], *names[:turn]]


def alternate(variants: dict[str, Callable[[], object]], repeats: int, calls: int = 1, *,
              warmup: bool = True, device=None) -> dict[str, list[Clocks]]:
    """Time every variant ``repeats`` times, alternated; per repeat, the mean of ``calls``.

    One untimed warm-up call of each variant comes first (allocator, caches, prepared plans)
    unless ``warmup`` is false. Returns ``{name: [Clocks per call, one per repeat]}``.
    """
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    times: dict[str, list[Clocks]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in rotation(names, repeat):
            def run(fn=variants[name]):
                for _ in range(calls):
                    fn()
            times[name].append(Clocks(*(c / calls for c in timed(run, device))))
    return times


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def ratios(times: Sequence[Sequence[float]], base: Sequence[Sequence[float]],
           clock: str | int = "cpu") -> tuple[float, float, float]:
    """(median of ``times``, ratio of the medians, median of the per-repeat ratios).

    ``times`` and ``base`` are equally long lists of clocks (:class:`Clocks` or tuples in its
    order) from the same alternated repeats; ``clock`` is ``"cpu"``, ``"wall"``, ``"thread"``
    or the index.
    """
    k = Clocks._fields.index(clock) if isinstance(clock, str) else clock
    mine, theirs = [t[k] for t in times], [t[k] for t in base]
    if len(mine) != len(theirs):
        raise ValueError(f"ratios: expected as many repeats as the base, found {len(mine)} and "
                         f"{len(theirs)}; time both in the same alternate() call")
    paired = median(a / b for a, b in zip(mine, theirs))
    return median(mine), median(mine) / median(theirs), paired


def write_section(path: Path, text: str, begin: str, end: str) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the part of
    ``path`` between those markers, keeping the rest; append it if the markers are not there
    (a missing file is created)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.strip("\n") + rest.split(end, 1)[1]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def cpu_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), for the reports' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
