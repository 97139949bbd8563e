"""Benchmark act_core's two hot paths against their floors, in one run.

(a) Fitting: Linear-AcT for SITES sites x 1280 units with 1024 source + 1024 target samples,
    against the floor of merely sorting those samples (``torch.sort`` along dim 0 of each
    (1024, 1280) float32 source and target). Target ratio <= 1.5.
(b) Transport: a (16, 4096, 1280) float32 activation, against one elementwise multiply-add over
    the same tensor (``torch.addcmul(b, x, a)`` with (1280,) vectors). Targets: min-max support
    <= 2.0, unbounded ~ 1.0.

Times are medians over repeats after a warm-up, with torch's default thread count. Each site's
data is generated untimed just before it is used (the 256 sites are not all held in memory), and
the floor and the fit are timed alternately on the same data, so background load hits both.

Usage: ``.venv/bin/python benchmarks/bench_core.py [--sites 256] [--repeats 5]``.
Writes ``benchmarks/results_core.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from act_core import TransportMap, transport
from act_core.estimators import linear_act
from act_core.samples import sort_units

__all__ = ["bench_fit", "bench_transport", "main"]

logger = logging.getLogger("bench_core")
RESULTS = Path(__file__).with_name("results_core.md")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _site_data(generator: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation-like samples: per-unit scale and offset, some heavy-tailed units."""
    scale = torch.rand(d, generator=generator) * 2 + 0.1  # (D,)
    offset = torch.randn(d, generator=generator)  # (D,)
    source = torch.randn(n, d, generator=generator) * scale + offset  # (N, D)
    target = torch.randn(n, d, generator=generator).sinh() * scale + offset + 0.5  # (N, D)
    return source, target


def bench_fit(sites: int = 256, n: int = 1024, d: int = 1280) -> dict[str, float]:
    """Total seconds over all sites: torch.sort floor, linear_act, and the fit's own sort."""
    generator = torch.Generator().manual_seed(0)
    warm_source, warm_target = _site_data(generator, n, d)
    linear_act(warm_source, warm_target)
    torch.sort(warm_source, dim=0)
    totals = {"floor": 0.0, "fit": 0.0, "own_sort": 0.0}
    ratios = []
    for site in range(sites):
        source, target = _site_data(generator, n, d)
        jobs = {
            "floor": lambda s=source, t=target: (torch.sort(s, dim=0), torch.sort(t, dim=0)),
            "fit": lambda s=source, t=target: linear_act(s, t),
            "own_sort": lambda s=source, t=target: (sort_units(s), sort_units(t)),
        }
        order = list(jobs) if site % 2 == 0 else list(reversed(jobs))
        times = {name: _timed(jobs[name]) for name in order}
        for name, seconds in times.items():
            totals[name] += seconds
        ratios.append(times["fit"] / times["floor"])
        if (site + 1) % 64 == 0:
            logger.info("fit: %d/%d sites", site + 1, sites)
    totals["median_site_ratio"] = statistics.median(ratios)
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
    for job in jobs.values():
        job()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            samples[name].append(_timed(job))
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["inside"] = inside
    return result


def _table(fit: dict[str, float], move: dict[str, float], args: argparse.Namespace) -> str:
    floor, base = fit["floor"], move["addcmul"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        "| benchmark | floor | act_core | ratio | target |",
        "|---|---|---|---|---|",
        f"| fit linear_act, {args.sites} sites x 1280 units, 1024 + 1024 samples | torch.sort "
        f"{floor:.2f} s | {fit['fit']:.2f} s | **{fit['fit'] / floor:.3f}** | <= 1.5 |",
        f"| (same fit vs its own NumPy SIMD sort) | own sort {fit['own_sort']:.2f} s | "
        f"{fit['fit']:.2f} s | {fit['fit'] / fit['own_sort']:.2f} | (info) |",
        f"| transport min-max, (16, 4096, 1280) float32 | addcmul {base * 1e3:.0f} ms | "
        f"{move['minmax'] * 1e3:.0f} ms | **{move['minmax'] / base:.2f}** | <= 2.0 |",
        f"| transport unbounded, same tensor | addcmul {base * 1e3:.0f} ms | "
        f"{move['unbounded'] * 1e3:.0f} ms | **{move['unbounded'] / base:.2f}** | ~ 1.0 |",
    ]
    notes = [
        "",
        f"Median per-site fit/floor ratio: {fit['median_site_ratio']:.3f}. Values inside the "
        f"min-max support in (b): {move['inside']:.0%}. Transport: median of {args.repeats} "
        "repeats after a warm-up.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average at the end {load:.1f}.",
    ]
    return "\n".join(rows + notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    move = bench_transport(repeats=args.repeats)
    logger.info("transport done")
    fit = bench_fit(args.sites)
    table = _table(fit, move, args)
    RESULTS.write_text("# act_core benchmark\n\n" + table)
    logger.info("\n%s", table)


if __name__ == "__main__":
    main()
