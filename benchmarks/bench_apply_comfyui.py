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
import json
import logging
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.bench_apply_report import BEGIN, END, VARIANTS, report
from benchmarks.bench_learn_cost import bench_learn, bench_memory, memory_child
from benchmarks.timing import Clocks, load_average, rotation, timed, write_section
from benchmarks.toy_inprocess import (
    CFG,
    FIT_SOURCE,
    FIT_TARGET,
    NEGATIVE,
    PROMPT,
    ROOT,
    SAMPLER,
    SCHEDULER,
    SEED,
    SIZE,
    _setup,
    reference_sites,
)

logger = logging.getLogger("bench_apply_comfyui")
RESULTS = ROOT / "docs" / "results.md"


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

    def sample(name: str) -> tuple[Clocks, torch.Tensor]:
        patched = models[name]
        comfy.model_management.load_models_gpu([patched])  # untimed: switching clones reloads
        handles = reference_hooks(unet, maps["linear_act"], 1.0) if name == "reference" else []
        out: list[torch.Tensor] = []
        try:
            seconds = timed(lambda: out.append(comfy.sample.sample(
                patched, noise, steps, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                disable_pbar=True, seed=SEED)))
        finally:
            for handle in handles:
                handle.remove()
        return seconds, out[0]

    samples = {name: sample(name)[1] for name in VARIANTS}  # warm-up, and the outputs
    times: dict[str, list[Clocks]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats):
        for name in rotation(VARIANTS, repeat):
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
                total = timed(lambda p=patched: comfy.sample.sample(
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
    start_load = load_average()
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
    text = report(apply_result, learn_rows, memory_rows, args, (start_load, load_average()))
    write_section(args.out, text, BEGIN, END)
    logger.info("\n%s", text)


if __name__ == "__main__":
    main()
