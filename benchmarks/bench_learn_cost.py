"""Learn cost of AcT Learn Transport inside ComfyUI on the toy checkpoint (part 2 of
``bench_apply_comfyui``, which runs it and writes the report).

``learn_maps`` (one denoiser evaluation per prompt and pass through ComfyUI's sampling path,
recording, fitting) for N source and N target prompts, all at once and incremental, against the
same number of plain denoiser evaluations through the same path with nothing recorded; and the
peak resident set of both, each in a fresh process (``--memory-child``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import torch

from benchmarks.timing import Clocks, rotation, timed
from benchmarks.toy_inprocess import (
    ROOT,
    SIZE,
    _counting,
    _reset_peak,
    _setup,
    _status_kb,
    plain_passes,
    reference_sites,
)

__all__ = ["ALLOCATORS", "bench_learn", "bench_memory", "memory_child"]

logger = logging.getLogger("bench_apply_comfyui")
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


def _prompts(n: int) -> tuple[list[str], list[str]]:
    combos = [(c, s, d) for d in ("", " with a black dot") for c in COLOURS for s in SHAPES]
    chosen = [combos[i % len(combos)] for i in range(n)]
    return ([f"a {c} {s}{d}" for c, s, d in chosen],
            [f"a striped {c} {s}{d}" for c, s, d in chosen])


def _learn_jobs(pack, model, clip, n: int, size: int, incremental: bool, samples: int,
                source_passes: int | None = None):
    """(learn, floor, evaluations) for N prompts per set, ``samples`` noise samples per prompt
    (one evaluation of a batch of that many); the passes over the source prompts are counted
    in one untimed learn run unless given. The floor runs once here (a warm-up, and a check of
    the count)."""
    learn = pack.nodes.learn
    source_text, target_text = _prompts(n)
    source, target = learn.encode_prompts(clip, source_text), learn.encode_prompts(clip,
                                                                                   target_text)
    latent = torch.zeros(samples, 4, size // 8, size // 8)
    counted, counter = _counting(model)

    def run_learn():
        return learn.learn_maps(counted, source, target, support="unbounded",
                                sites=reference_sites(pack, model),
                                incremental=incremental, latent={"samples": latent},
                                samples_per_prompt=samples)

    if source_passes is None:
        run_learn()
        source_passes = (counter[0] - len(target)) // len(source)
        if len(target) + source_passes * len(source) != counter[0]:
            raise RuntimeError(f"learn_maps ran {counter[0]} evaluations, not N target + "
                               "k N source ones")
    evaluations = len(target) + source_passes * len(source)

    def run_floor():
        plain_passes(counted, target, latent, 100003)
        for _ in range(source_passes):
            plain_passes(counted, source, latent, 0)

    counter[0] = 0
    run_floor()
    if counter[0] != evaluations:
        raise RuntimeError(f"the floor ran {counter[0]} evaluations, learn_maps {evaluations}")
    return run_learn, run_floor, evaluations


def bench_learn(pack, model, clip, cases: list[tuple[int, bool]], samples: int,
                repeats: int) -> list[dict]:
    rows = []
    for n, incremental in cases:
        run_learn, run_floor, evaluations = _learn_jobs(
            pack, model, clip, n, SIZE, incremental, samples, None if incremental else 1)
        if not incremental:
            run_learn()  # warm-up
        times: dict[str, list[Clocks]] = {"learn": [], "floor": []}
        for repeat in range(repeats):
            jobs = {"learn": run_learn, "floor": run_floor}
            for name in rotation(list(jobs), repeat):
                times[name].append(timed(jobs[name]))
        rows.append({"n": n, "incremental": incremental, "evaluations": evaluations,
                     "samples": samples, "times": times})
        logger.info("learn: N %d, incremental %s, %d evaluations (CPU s / wall s): %s", n,
                    incremental, evaluations, {k: [f"{t.cpu:.2f}/{t.wall:.2f}" for t in v]
                                               for k, v in times.items()})
    return rows


def memory_child(n: int, size: int, samples: int) -> dict:
    """In a fresh process: the peak resident set above the resting one, while running the
    plain evaluations, then while learning (both run once before, as a warm-up)."""
    pack, model, clip = _setup()
    run_learn, run_floor, evaluations = _learn_jobs(pack, model, clip, n, size, False, samples,
                                                    1)
    run_learn()
    rest = _reset_peak()
    run_floor()
    floor_kb = _status_kb("VmHWM") - rest
    rest_learn = _reset_peak()
    maps = run_learn()
    learn_kb = _status_kb("VmHWM") - rest_learn
    recorded = sum((m.n_source + m.n_target) * m.dim * 4 for m in maps.values())
    return {"n": n, "size": size, "samples": samples, "evaluations": evaluations,
            "rest_kb": rest,
            "floor_kb": floor_kb, "learn_kb": learn_kb, "recorded_bytes": recorded,
            "units": sum(m.dim for m in maps.values()), "sites": len(maps)}


#: glibc's default (a threshold that rises to the largest freed block) and a fixed one.
ALLOCATORS = {"glibc default": {}, "fixed mmap threshold 128 KiB": {
    "MALLOC_MMAP_THRESHOLD_": "131072"}}


def bench_memory(cases: list[tuple[int, int]], samples: int) -> list[dict]:
    rows = []
    for allocator, env in ALLOCATORS.items():
        for n, size in cases:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_apply_comfyui", "--threads",
                 str(torch.get_num_threads()), "--memory-child", str(n), str(size), str(samples)],
                check=True, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]),
                         "allocator": allocator})
            logger.info("memory: %s", rows[-1])
    return rows
