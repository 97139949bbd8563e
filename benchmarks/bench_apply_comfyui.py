"""Benchmark the AcT nodes inside ComfyUI on the toy checkpoint: apply overhead and learn cost.

(1) Apply overhead. ComfyUI's own sampling (``comfy.sample.sample``: euler, 20 steps, cfg 5,
    64x64, batch 4) of one prompt, timed for these variants of the same MODEL:

    * ``plain``: no AcT, the baseline;
    * ``act``: our ``patch_model`` (AcT Apply Transport, mode hooks, its defaults: the
      conditional CFG half) with linear_act maps on all 27 norm sites of the UNet, strength 1,
      unbounded support;
    * ``act_gated``: the same maps, sites and fit with a learned gate per site (``gate =
      learned``): every site computes its gate and transports as much as it opens (the
      checks line reports how much the gated samples move);
    * ``act_both``: the same with apply_to both (every item of the CFG batch);
    * ``reference``: a reference-style implementation of the same maps: one plain Python
      forward hook per site, registered for the whole sampling, that casts the output to
      float32, computes ``x + lambda ((omega - 1) x + beta)`` (per-channel spatial means for
      channel maps) and casts back; both halves;
    * ``mean_hooks``: mean_act maps (omega = 1) on the same sites, mode hooks, apply_to both;
    * ``folded``: the same mean_act maps, mode folded (folded into the norms' affine weights as
      ComfyUI weight patches, so sampling runs no extra op).

    Each variant is sampled once as a warm-up, then ``--repeats`` times; the order of the
    variants rotates from repeat to repeat so background load hits all alike. The model is
    loaded untimed before each timed call (ComfyUI reloads when another clone of the same model
    ran last), so the times are sampling only. Ratios: median time of the variant over the
    median time of ``plain``, and the median over repeats of the per-repeat ratio. Targets:
    ``act`` <= 1.05, ``folded`` <= 1.01. Then, free of run-to-run noise, one more sampling
    of each hooks variant with a CPU clock around the code that runs only for the transport
    (hooks, per-call context): its share of the run.

(2) Learn cost. ``learn_maps`` (AcT Learn Transport's function: one denoiser evaluation per
    prompt and pass through ComfyUI's sampling path, recording, fitting) for N source and N
    target prompts at 64x64 (latent 8x8), all-at-once and incremental (the node's default, 8
    stages), against the same number of plain denoiser evaluations through the same path
    with nothing recorded. Alternated, median of ``--learn-repeats``. Target <= 1.2.
    Peak memory: for N = 8 and 32 at 64x64, and N = 8 at 128x128 (four times the pixels), a
    fresh process measures the peak resident set above the resting one (Linux: the peak is
    reset through ``/proc/self/clear_refs``) while running the plain evaluations and while
    learning, with glibc's default allocator and with a fixed mmap threshold (which keeps
    large transient buffers out of the heap, so the peak shows live memory rather than heap
    fragmentation), against the recorded samples, N x samples x units x 4 bytes per set.

Times are CPU times of the process with ONE torch thread (``--threads``, see THREADS_NOTE):
on a machine shared with other jobs, the wall time of a multi-threaded run measures mostly
how long its threads wait for each other; wall times are reported too.

Usage: ``.venv/bin/python -m benchmarks.bench_apply_comfyui [--repeats 5] [--out FILE]``
(about 25 minutes on 2 loaded cores). Writes its two sections into ``docs/results.md`` between
its markers (other sections of that file are kept).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

from toyworld.checkpoint import checkpoint_path  # noqa: E402
from toyworld.comfy_env import import_comfy, import_pack  # noqa: E402

logger = logging.getLogger("bench_apply_comfyui")
RESULTS = ROOT / "docs" / "results.md"
PACK = "act_pack"
BEGIN, END = "<!-- bench_apply_comfyui: begin -->", "<!-- bench_apply_comfyui: end -->"

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
FIT_SOURCE = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]
FIT_TARGET = ["a striped " + p.removeprefix("a ") for p in FIT_SOURCE]
PROMPT, NEGATIVE = "a blue triangle", ""
CFG, SIZE, SAMPLER, SCHEDULER, SEED = 5.0, 64, "euler", "normal", 0
VARIANTS = ("plain", "act", "act_gated", "act_both", "reference", "mean_hooks", "folded")
TARGETS = {"act": "<= 1.05", "folded": "<= 1.01"}


def reference_sites(pack, model) -> str:
    """The family's reference site preset (every norm layer of a UNet, Flux's block outputs):
    the sites these benchmarks measure, fixed, where ``auto`` would choose by measurement."""
    families = pack.nodes.families
    return next(iter(families.SITE_PRESETS[families.arch_of(
        model.get_model_object("diffusion_model"))]))


def _pack():
    """The repository imported as a ComfyUI custom node pack (relative imports work)."""
    return import_pack()


def _setup():
    import_comfy()
    logging.getLogger().setLevel(logging.WARNING)  # ComfyUI's "Requested to load ..." lines
    import comfy.sd

    pack = _pack()
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    return pack, model, clip


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) that ``fn()`` took."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _ratios(times: list[tuple[float, float]], base: list[tuple[float, float]], clock: int
            ) -> tuple[float, float, float]:
    """(median, ratio of medians, median of per-repeat ratios) on clock 0 (CPU) or 1 (wall)."""
    mine, theirs = [t[clock] for t in times], [t[clock] for t in base]
    median = statistics.median(mine)
    paired = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
    return median, median / statistics.median(theirs), paired


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


# ---------------------------------------------------------------------------------------------
# (1) apply overhead


def reference_hooks(unet: torch.nn.Module, maps, strength: float,
                    clock: list[float] | None = None) -> list:
    """The reference's way: a plain forward hook per site, float32 casts, for the whole run.

    With ``clock``, the CPU time spent in the hooks is added to ``clock[0]``.
    """
    handles = []
    for site, tmap in maps.items():
        module = unet.get_submodule(site)
        omega, beta = tmap.scale.float(), tmap.shift.float()  # (D,)
        if tmap.mode == "channels":
            omega, beta = omega.view(1, -1, 1, 1), beta.view(1, -1, 1, 1)

            def hook(_module, _args, out, omega=omega, beta=beta):
                x = out.float()  # (B, C, H, W)
                mu = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
                return (x + strength * ((omega - 1.0) * mu + beta)).to(out.dtype)
        else:
            def hook(_module, _args, out, omega=omega, beta=beta):
                x = out.float()  # (B, T, D)
                return (x + strength * ((omega - 1.0) * x + beta)).to(out.dtype)
        handles.append(module.register_forward_hook(hook if clock is None
                                                    else _clocked(hook, clock)))
    return handles


def _clocked(fn: Callable, clock: list[float]) -> Callable:
    """``fn`` that adds the CPU time of each call to ``clock[0]``."""
    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[0] += time.process_time() - start

    return timed


@contextmanager
def _clocked_act(pack, clock: list[float]):
    """Add the CPU time spent in AcT's code while sampling to ``clock[0]``: every site hook
    call, and entering and leaving the per-call ``TransportPlan.applied`` context."""
    hooks = pack.act_core.apply._SiteHook
    plan = pack.act_core.apply.TransportPlan
    original_call, original_context = hooks.__call__, plan.applied

    @contextmanager
    def context(*args, **kwargs):
        start = time.process_time()
        manager = original_context(*args, **kwargs)
        manager.__enter__()
        clock[0] += time.process_time() - start
        try:
            yield
        except BaseException:
            if not manager.__exit__(*sys.exc_info()):
                raise
        else:
            start = time.process_time()
            manager.__exit__(None, None, None)
            clock[0] += time.process_time() - start

    hooks.__call__ = _clocked(original_call, clock)
    plan.applied = context
    try:
        yield
    finally:
        hooks.__call__, plan.applied = original_call, original_context


def bench_apply(pack, model, clip, batch: int, steps: int, repeats: int, samples: int) -> dict:
    import comfy.model_management
    import comfy.sample

    learn, apply = pack.nodes.learn, pack.nodes.apply
    encode = learn.encode_prompts
    source, target = encode(clip, FIT_SOURCE), encode(clip, FIT_TARGET)
    fit_latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    maps = {method: learn.learn_maps(model, source, target, method=method, support="unbounded",
                                     sites=reference_sites(pack, model),
                                     incremental=False, latent=fit_latent,
                                     samples_per_prompt=samples)
            for method in ("linear_act", "mean_act")}
    # the same sites and fit as "act", with gates: its cost is the gate's
    maps["gated"] = learn.learn_maps(model, source, target, support="unbounded", incremental=False,
                                     sites=reference_sites(pack, model), latent=fit_latent,
                                     samples_per_prompt=samples, gate=True)
    positive, negative = encode(clip, [PROMPT, NEGATIVE])
    latent = torch.zeros(batch, 4, SIZE // 8, SIZE // 8)
    noise = comfy.sample.prepare_noise(latent, SEED)
    unet = model.get_model_object("diffusion_model")
    models = {
        "plain": model,
        "act": apply.patch_model(model, maps["linear_act"], 1.0),
        "act_gated": apply.patch_model(model, maps["gated"], 1.0, gate="learned"),
        "act_both": apply.patch_model(model, maps["linear_act"], 1.0, apply_to="both"),
        "reference": model,
        "mean_hooks": apply.patch_model(model, maps["mean_act"], 1.0, apply_to="both"),
        "folded": apply.patch_model(model, maps["mean_act"], 1.0, apply_to="both",
                                    mode="folded"),
    }

    def sample(name: str) -> tuple[tuple[float, float], torch.Tensor]:
        patched = models[name]
        comfy.model_management.load_models_gpu([patched])  # untimed: switching clones reloads
        handles = reference_hooks(unet, maps["linear_act"], 1.0) if name == "reference" else []
        out: list[torch.Tensor] = []
        try:
            seconds = _timed(lambda: out.append(comfy.sample.sample(
                patched, noise, steps, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                disable_pbar=True, seed=SEED)))
        finally:
            for handle in handles:
                handle.remove()
        return seconds, out[0]

    samples = {name: sample(name)[1] for name in VARIANTS}  # warm-up, and the outputs
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats):
        turn = repeat % len(VARIANTS)
        for name in VARIANTS[turn:] + VARIANTS[:turn]:
            times[name].append(sample(name)[0])
        logger.info("apply: repeat %d/%d (CPU s / wall s): %s", repeat + 1, repeats,
                    ", ".join(f"{n} {t[-1][0]:.2f}/{t[-1][1]:.2f}" for n, t in times.items()))

    attributed = {}
    for name in ("act", "act_gated", "act_both", "mean_hooks", "reference"):
        clock = [0.0]
        patched = models[name]
        comfy.model_management.load_models_gpu([patched])
        handles = (reference_hooks(unet, maps["linear_act"], 1.0, clock)
                   if name == "reference" else [])
        try:
            with _clocked_act(pack, clock):
                total = _timed(lambda p=patched: comfy.sample.sample(
                    p, noise, steps, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                    disable_pbar=True, seed=SEED))[0]
        finally:
            for handle in handles:
                handle.remove()
        attributed[name] = (clock[0], total)
        logger.info("apply: %s: %.3f s of %.2f s CPU in AcT's code", name, clock[0], total)

    def diff(a: str, b: str) -> float:
        return float((samples[a] - samples[b]).abs().max())

    return {"times": times, "attributed": attributed, "sites": len(maps["linear_act"]),
            "modes": sorted({m.mode for m in maps["linear_act"].values()}),
            "checks": {"reference_vs_act_both": diff("reference", "act_both"),
                       "folded_vs_mean_hooks": diff("folded", "mean_hooks"),
                       "act_vs_plain": diff("act", "plain"),
                       "gated_vs_act": diff("act_gated", "act"),
                       "gated_vs_plain": diff("act_gated", "plain"),
                       "mean_hooks_vs_plain": diff("mean_hooks", "plain")}}


# ---------------------------------------------------------------------------------------------
# (2) learn cost


def _prompts(n: int) -> tuple[list[str], list[str]]:
    combos = [(c, s, d) for d in ("", " with a black dot") for c in COLOURS for s in SHAPES]
    chosen = [combos[i % len(combos)] for i in range(n)]
    return ([f"a {c} {s}{d}" for c, s, d in chosen],
            [f"a striped {c} {s}{d}" for c, s, d in chosen])


def _one_evaluation(model, x, sigmas, extra_args=None, callback=None, disable=None):
    model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    return x


def plain_passes(model, conds: list, latent: torch.Tensor, seed: int) -> None:
    """One denoiser evaluation per conditioning at the noisiest step, through the sampling path
    learn_maps uses (``sample_custom``, cfg 1), with nothing recorded."""
    import comfy.sample
    import comfy.samplers

    sampler = comfy.samplers.KSAMPLER(_one_evaluation)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    sigmas = torch.tensor([sigma, 0.0])
    for i, cond in enumerate(conds):
        noise = comfy.sample.prepare_noise(latent, seed + i)
        comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, cond, cond, latent,
                                   disable_pbar=True, seed=seed + i)


def _counting(model):
    """A clone that counts its denoiser evaluations (the same wrapper for learn and floor)."""
    from comfy.patcher_extension import WrappersMP

    counter = [0]

    def count(executor, *args, **kwargs):
        counter[0] += 1
        return executor(*args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "bench_count", count)
    return clone, counter


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
        times: dict[str, list[tuple[float, float]]] = {"learn": [], "floor": []}
        for repeat in range(repeats):
            jobs = [("learn", run_learn), ("floor", run_floor)]
            for name, job in jobs[repeat % 2:] + jobs[:repeat % 2]:
                times[name].append(_timed(job))
        rows.append({"n": n, "incremental": incremental, "evaluations": evaluations,
                     "samples": samples, "times": times})
        logger.info("learn: N %d, incremental %s, %d evaluations (CPU s / wall s): %s", n,
                    incremental, evaluations, {k: [f"{c:.2f}/{w:.2f}" for c, w in v]
                                               for k, v in times.items()})
    return rows


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Free what can be freed, reset the peak resident set to the current one (Linux:
    ``/proc/self/clear_refs``); return the current resident set in KiB."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


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
                [sys.executable, __file__, "--threads", str(torch.get_num_threads()),
                 "--memory-child", str(n), str(size), str(samples)],
                check=True, capture_output=True, text=True, env={**os.environ, **env})
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]),
                         "allocator": allocator})
            logger.info("memory: %s", rows[-1])
    return rows


# ---------------------------------------------------------------------------------------------
# report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LABELS = {
    "plain": "no AcT (baseline)",
    "act": "AcT Apply Transport, hooks, apply_to conditional (default), linear_act",
    "act_gated": "the same maps **gated** (gate learned on the same sites; every site computes "
                 "its gate, which is partly open on this prompt: see the checks below)",
    "act_both": "AcT Apply Transport, hooks, apply_to both, linear_act",
    "reference": "reference-style Python hooks (float32 casts), both halves, linear_act",
    "mean_hooks": "AcT Apply Transport, hooks, apply_to both, mean_act",
    "folded": "AcT Apply Transport, **folded**, apply_to both, mean_act",
}


def report(apply_result: dict | None, learn_rows: list[dict], memory_rows: list[dict],
           args: argparse.Namespace, loads: tuple[float, float]) -> str:
    lines = [BEGIN]
    if apply_result is not None:
        lines += _apply_lines(apply_result, args)
    if learn_rows or memory_rows:
        lines += _learn_lines(learn_rows, memory_rows, args)
    lines += [
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`.",
        f"Machine: {_cpu_name()} ({platform.machine()}), {os.cpu_count()} CPU(s) shared with "
        f"other jobs; torch {torch.__version__} with {torch.get_num_threads()} thread(s); load "
        f"average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end. {THREADS_NOTE}",
        END,
    ]
    return "\n".join(lines) + "\n"


THREADS_NOTE = (
    "Why one thread and CPU time: on this shared machine, sampling the toy model with torch's "
    "default 2 threads took 47 s (CPU 47 s) against 8.5 s with 1 thread, and wall times of "
    "the same run varied up to 4x from one repeat to the next: the threads wait for each other "
    "at every op while the other jobs hold a core. With one thread, the CPU time of the process "
    "is its own work, what its wall time would be on an idle core; wall times are shown too.")


def _apply_lines(result: dict, args: argparse.Namespace) -> list[str]:
    times = result["times"]
    lines = [
        "## Apply overhead",
        "",
        f"ComfyUI's own sampling (`comfy.sample.sample`, {SAMPLER}, {args.steps} steps, "
        f"cfg {CFG:g}, {SIZE}x{SIZE}, batch {args.batch}, one prompt) of the toy checkpoint; "
        f"maps on all {result['sites']} norm sites of the UNet "
        f"({', '.join(result['modes'])} maps), strength 1, unbounded support. Median of "
        f"{args.repeats} repeats after a warm-up, the variants in rotating order; loading the "
        "model (ComfyUI reloads when another clone of it ran last) is not timed.",
        "",
        "| variant | CPU time | **ratio** | per-repeat ratios (median) | wall time | wall ratio "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        cpu, ratio, paired = _ratios(times[name], times["plain"], 0)
        wall, wall_ratio, _ = _ratios(times[name], times["plain"], 1)
        lines.append(f"| {LABELS[name]} | {cpu:.2f} s | **{ratio:.3f}** | {paired:.3f} | "
                     f"{wall:.2f} s | {wall_ratio:.3f} | {TARGETS.get(name, '')} |")
    attributed = result["attributed"]
    lines += [
        "",
        "The same overhead measured inside one run, free of the run-to-run noise: one more "
        "sampling of each hooks variant with a CPU clock around the code that runs only because "
        "of the transport (the site hooks; for ours also entering and leaving the per-call "
        "`TransportPlan.applied` context): that time over the rest of the run. The folded variant "
        "has no hook, no wrapper and no extra op: its patches are applied when the model loads.",
        "",
        "| variant | CPU time in the transport code | rest of the run | overhead |",
        "|---|---|---|---|",
        *(f"| {LABELS[name]} | {spent:.3f} s | {total - spent:.2f} s | "
          f"**{spent / (total - spent):.1%}** |" for name, (spent, total) in attributed.items()),
    ]
    checks = result["checks"]
    lines += [
        "",
        f"Checks on the samples (max abs difference of the latents): reference-style hooks vs "
        f"ours (both halves) {checks['reference_vs_act_both']:.1e}; folded vs hooks with the "
        f"same maps {checks['folded_vs_mean_hooks']:.1e}; for scale, AcT changes the samples "
        f"by {checks['act_vs_plain']:.2f} (linear_act, conditional half; the gated maps by "
        f"{checks.get('gated_vs_plain', float('nan')):.2f} and differ from the ungated by "
        f"{checks.get('gated_vs_act', float('nan')):.2f}) and "
        f"{checks['mean_hooks_vs_plain']:.2f} (mean_act, both halves).",
        "",
        "CPU seconds per repeat: " + "; ".join(
            f"{name} " + ", ".join(f"{t[0]:.2f}" for t in times[name]) for name in VARIANTS)
        + ".",
        "",
    ]
    return lines


def _learn_lines(learn_rows: list[dict], memory_rows: list[dict],
                 args: argparse.Namespace) -> list[str]:
    lines = [
        "## Learn cost",
        "",
        f"`learn_maps` (AcT Learn Transport: record the 27 norm sites, fit linear_act) for N "
        f"source + N target prompts, {args.samples_per_prompt} noise samples per prompt (its "
        f"default: one evaluation of a batch of {args.samples_per_prompt} per prompt and pass), "
        f"{SIZE}x{SIZE}, against the same number of plain denoiser evaluations through the same "
        "sampling path (`sample_custom`, one evaluation at the noisiest step, cfg 1) with "
        f"nothing recorded. Median of {args.learn_repeats} repeats, alternated.",
        "",
        "| N per set | fitting | evaluations | learn_maps, CPU | plain evaluations, CPU | "
        "**ratio** | per-repeat ratios (median) | wall ratio | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in learn_rows:
        kind = "incremental, 8 stages (default)" if row["incremental"] else "all at once"
        times = row["times"]
        cpu, ratio, paired = _ratios(times["learn"], times["floor"], 0)
        floor = statistics.median(t[0] for t in times["floor"])
        _, wall_ratio, _ = _ratios(times["learn"], times["floor"], 1)
        lines.append(f"| {row['n']} | {kind} | {row['evaluations']} | {cpu:.2f} s | "
                     f"{floor:.2f} s | **{ratio:.3f}** | {paired:.3f} | {wall_ratio:.3f} | "
                     "<= 1.2 |")
    if memory_rows:
        lines += [
            "",
            "Peak memory, in a fresh process each (all at once, after one untimed run of "
            "both): the peak resident set above the resting one (the loaded model, "
            f"{memory_rows[0]['rest_kb'] / 1024:.0f} MiB), reset before each phase (Linux "
            "`/proc/self/clear_refs`), while running the plain evaluations and while "
            "learning, against the samples learning records (N x samples per prompt x "
            "units x 4 bytes per set):",
            "",
            "| allocator | N per set | image | plain evaluations: peak above rest | "
            "learn_maps: peak above rest | difference | recorded samples |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in memory_rows:
            floor, learned = row["floor_kb"] / 1024, row["learn_kb"] / 1024
            lines.append(f"| {row['allocator']} | {row['n']} | {row['size']}x{row['size']} | "
                         f"{floor:.1f} MiB | "
                         f"{learned:.1f} MiB | {learned - floor:+.1f} MiB | "
                         f"{row['recorded_bytes'] / 1024:.0f} KiB ({row['sites']} sites, "
                         f"{row['units']} units) |")
    return lines + [""]


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace a benchmark's section of ``path`` (between its markers), keeping the rest."""
    old = path.read_text() if path.exists() else "# Results\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: see THREADS_NOTE)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--learn-repeats", type=int, default=3)
    parser.add_argument("--learn-cases", default="8,8i,32",
                        help="N per set, comma-separated; 'i' = incremental (default: 8 stages)")
    parser.add_argument("--samples-per-prompt", type=int, default=8,
                        help="learn_maps' samples_per_prompt (its default, 8)")
    parser.add_argument("--skip", default="", help="comma-separated: apply, learn, memory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    skip = set(filter(None, args.skip.split(",")))
    start_load = _load()
    pack, model, clip = _setup()
    logger.setLevel(logging.INFO)
    cases = [(int(c.rstrip("i")), c.endswith("i")) for c in args.learn_cases.split(",")]
    sizes = sorted({n for n, _ in cases})
    apply_result = (bench_apply(pack, model, clip, args.batch, args.steps, args.repeats,
                                args.samples_per_prompt)
                    if "apply" not in skip else None)
    learn_rows = bench_learn(pack, model, clip, cases, args.samples_per_prompt,
                             args.learn_repeats) if "learn" not in skip else []
    memory_rows = bench_memory([(n, SIZE) for n in sizes] + [(sizes[0], 2 * SIZE)],
                               args.samples_per_prompt) if "memory" not in skip else []
    text = report(apply_result, learn_rows, memory_rows, args, (start_load, _load()))
    write_section(args.out, text)
    logger.info("\n%s", text)


if __name__ == "__main__":
    main()
