"""Benchmark act_core's two hot paths against their floors, in one run.

(a) Fitting: Linear-AcT for SITES sites x 1280 units with 1024 source + 1024 target samples,
    against the floor of merely sorting those samples: the fastest of several ways to sort both
    (N, D) float32 samples along the sample axis with NumPy's SIMD sort (``np.sort(x, axis=0)``;
    a transposed copy by NumPy or by torch, then an in-place sort along contiguous rows; the
    same by blocks of units into a reused buffer, exactly as the fit sorts). Target ratio
    <= 1.5. The fit and the sorts are single-threaded (NumPy's sort is; only torch's transposed
    copy may use torch's threads, which can only lower the floor). For information, also
    the sort alone on data already laid out unit-major (no transposition: a bound no fit from
    (N, D) samples can reach) and ``torch.sort`` (on every 8th site).
(b) Transport: a (16, 4096, 1280) float32 activation, against one elementwise multiply-add over
    the same tensor (``torch.addcmul(b, x, a)`` with (1280,) vectors). Targets: min-max support
    <= 1.5 (issue 24), unbounded ~ 1.0.

Fitting: each site's data is generated untimed just before it is used (the 256 sites are not
all held in memory) and the fit and every sort are timed once per site, in an order that rotates
from site to site, so background load hits all of them alike; totals are sums over the sites.
Transport: medians over repeats after a warm-up, with torch's default thread count.

Usage: ``.venv/bin/python -m benchmarks.bench_core [--sites 256] [--repeats 5] [--out FILE]``.
Writes ``benchmarks/results_core.md`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from act_core import TransportMap, transport
from act_core.estimators import linear_act
from act_core.sorted_moments import block_units
from benchmarks.timing import alternate, cpu_name, load_average, median, rotation, timed

__all__ = ["bench_fit", "bench_transport", "main"]

logger = logging.getLogger("bench_core")
RESULTS = Path(__file__).with_name("results_core.md")
TORCH_SORT_EVERY = 8  # torch.sort is slow: time it on every 8th site only (information)


def _site_data(generator: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation-like samples: per-unit scale and offset, some heavy-tailed units."""
    scale = torch.rand(d, generator=generator) * 2 + 0.1  # (D,)
    offset = torch.randn(d, generator=generator)  # (D,)
    source = torch.randn(n, d, generator=generator) * scale + offset  # (N, D)
    target = torch.randn(n, d, generator=generator).sinh() * scale + offset + 0.5  # (N, D)
    return source, target


def _sort_axis0(samples: tuple[np.ndarray, ...]) -> None:
    for x in samples:
        np.sort(x, axis=0)  # (N, D), along the sample axis


def _sort_transposed(samples: tuple[np.ndarray, ...]) -> None:
    for x in samples:
        np.ascontiguousarray(x.T).sort(axis=1)  # (D, N) copy, sorted in place


def _sort_torch_transposed(samples: tuple[torch.Tensor, ...]) -> None:
    for x in samples:
        x.t().contiguous().numpy().sort(axis=1)  # torch's blocked transposition, NumPy's sort


def _sort_blocked(samples: tuple[np.ndarray, ...], buffer: np.ndarray) -> None:
    """The fit's own sort, alone: blocks of units copied transposed into a buffer, sorted."""
    step = buffer.shape[0]
    for x in samples:
        for first in range(0, x.shape[1], step):
            rows = buffer[:min(step, x.shape[1] - first)]
            np.copyto(rows, x[:, first:first + step].T)
            rows.sort(axis=1)


#: The candidates for the floor: ways of sorting both (N, D) float32 samples along N.
SORTS: dict[str, str] = {
    "axis0": "`np.sort(x, axis=0)`",
    "transposed": "transposed copy (NumPy), `ndarray.sort(axis=1)`",
    "torch_transposed": "transposed copy (`x.t().contiguous()`), `ndarray.sort(axis=1)`",
    "blocked": "by blocks of units into a reused buffer (the fit's own sort)",
}


def bench_fit(sites: int = 256, n: int = 1024, d: int = 1280) -> dict[str, float]:
    """Total seconds over all sites: the fit, every floor candidate and the information sorts.

    Keys: ``fit``, one per :data:`SORTS` entry, ``unit_major`` (sort alone of data already
    unit-major), ``torch_sort`` and ``fit_at_torch_sort`` (both over every
    :data:`TORCH_SORT_EVERY`-th site), ``median_site_ratio`` (median over sites of the fit over
    that site's fastest floor candidate).
    """
    generator = torch.Generator().manual_seed(0)
    buffer = np.empty((block_units(n, n, d), n), np.float32)
    totals = dict.fromkeys(["fit", *SORTS, "unit_major", "torch_sort", "fit_at_torch_sort"],
                           0.0)
    ratios = []
    for site in range(-1, sites):  # site -1: warm-up, not counted
        source, target = _site_data(generator, n, d)
        samples = (source.numpy(), target.numpy())
        unit_major = tuple(np.ascontiguousarray(x.T) for x in samples)  # sorted in place, once
        jobs: dict[str, Callable[[], object]] = {
            "fit": lambda s=source, t=target: linear_act(s, t),
            "axis0": lambda x=samples: _sort_axis0(x),
            "transposed": lambda x=samples: _sort_transposed(x),
            "torch_transposed": lambda s=source, t=target: _sort_torch_transposed((s, t)),
            "blocked": lambda x=samples: _sort_blocked(x, buffer),
            "unit_major": lambda x=unit_major: [y.sort(axis=1) for y in x],
        }
        if site < 0 or site % TORCH_SORT_EVERY == 0:
            jobs["torch_sort"] = lambda s=source, t=target: (torch.sort(s, dim=0),
                                                             torch.sort(t, dim=0))
        times = {name: timed(jobs[name]).wall for name in rotation(list(jobs), max(site, 0))}
        if site < 0:
            continue
        for name, seconds in times.items():
            totals[name] += seconds
        if "torch_sort" in times:
            totals["fit_at_torch_sort"] += times["fit"]
        ratios.append(times["fit"] / min(times[name] for name in SORTS))
        if (site + 1) % 64 == 0:
            logger.info("fit: %d/%d sites", site + 1, sites)
    totals["median_site_ratio"] = median(ratios)
    return totals


def _bench_map(d: int) -> TransportMap:
    generator = torch.Generator().manual_seed(1)
    levels = torch.linspace(-2.0, 2.0, 13).unsqueeze(1).expand(13, d).contiguous()  # (K, D)
    return TransportMap(scale=torch.rand(d, generator=generator) + 0.5,
                        shift=torch.randn(d, generator=generator), lo=levels[0].clone(),
                        hi=levels[-1].clone(), quantiles=levels)


def bench_transport(shape: tuple[int, int, int] = (16, 4096, 1280), repeats: int = 5
                    ) -> dict[str, float]:
    """Median seconds of addcmul and transport (min-max, unbounded) over a float32 tensor."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))  # (B, T, D)
    tmap = _bench_map(shape[-1])
    a, b = tmap.scale, tmap.shift
    jobs = {
        "addcmul": lambda: torch.addcmul(b, x, a),
        "minmax": lambda: transport(x, tmap, 1.0, "minmax"),
        "unbounded": lambda: transport(x, tmap, 1.0, "unbounded"),
    }
    inside = float(((x >= tmap.lo) & (x <= tmap.hi)).float().mean())
    samples = alternate(jobs, repeats)  # one warm-up call each, then alternated
    result = {name: median(t.wall for t in values) for name, values in samples.items()}
    result["inside"] = inside
    return result


def _table(fit: dict[str, float], move: dict[str, float], args: argparse.Namespace,
           loads: tuple[float, float]) -> str:
    floor_name = min(SORTS, key=lambda name: fit[name])
    floor, base = fit[floor_name], move["addcmul"]
    sampled = -(-args.sites // TORCH_SORT_EVERY)
    rows = [
        "| benchmark | floor | act_core | ratio | target |",
        "|---|---|---|---|---|",
        f"| fit linear_act, {args.sites} sites x 1280 units, 1024 + 1024 samples | fastest "
        f"NumPy sort of the same samples ({floor_name}) {floor:.2f} s | {fit['fit']:.2f} s | "
        f"**{fit['fit'] / floor:.2f}** | <= 1.5 |",
        f"| (same fit vs the sort alone of data already unit-major) | {fit['unit_major']:.2f} s "
        f"| {fit['fit']:.2f} s | {fit['fit'] / fit['unit_major']:.2f} | (info) |",
        f"| (same fit vs `torch.sort(x, dim=0)`, {sampled} of the sites) | "
        f"{fit['torch_sort']:.2f} s | {fit['fit_at_torch_sort']:.2f} s | "
        f"{fit['fit_at_torch_sort'] / fit['torch_sort']:.2f} | (info) |",
        f"| transport min-max, (16, 4096, 1280) float32 | addcmul {base * 1e3:.0f} ms | "
        f"{move['minmax'] * 1e3:.0f} ms | **{move['minmax'] / base:.2f}** | <= 1.5 |",
        f"| transport unbounded, same tensor | addcmul {base * 1e3:.0f} ms | "
        f"{move['unbounded'] * 1e3:.0f} ms | **{move['unbounded'] / base:.2f}** | ~ 1.0 |",
        "",
        "Floor candidates (both samples, float32, sorted along the sample axis; total over the "
        "sites):",
        "",
        "| sort | total | fit / sort |",
        "|---|---|---|",
        *(f"| {SORTS[name]} | {fit[name]:.2f} s | {fit['fit'] / fit[name]:.2f} |"
          for name in SORTS),
        f"| (info) sort alone, data already unit-major | {fit['unit_major']:.2f} s | "
        f"{fit['fit'] / fit['unit_major']:.2f} |",
    ]
    notes = [
        "",
        f"Median over sites of fit / that site's fastest floor candidate: "
        f"{fit['median_site_ratio']:.2f}. Values inside the min-max support in (b): "
        f"{move['inside']:.0%}. Transport: median of {args.repeats} repeats after a warm-up.",
        f"Command: `{' '.join(['python -m benchmarks.bench_core', *sys.argv[1:]])}`.",
        f"Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} CPU(s); torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads (transport, torch.sort, the "
        f"copy of the `x.t().contiguous()` candidate); NumPy {np.__version__} (its sort, and so "
        f"the fit and the other floor candidates, runs on one thread); load average "
        f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end "
        f"({'idle: no other job' if max(loads) < 1.5 else 'other jobs were running'}).",
    ]
    return "\n".join(rows + notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="where to write the results (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start_load = load_average()
    move = bench_transport(repeats=args.repeats)
    logger.info("transport done")
    fit = bench_fit(args.sites)
    table = _table(fit, move, args, (start_load, load_average()))
    args.out.write_text("# act_core benchmark\n\n" + table)
    logger.info("\n%s", table)


if __name__ == "__main__":
    main()
