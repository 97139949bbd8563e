"""The report of ``bench_apply_comfyui``: its two sections of docs/results.md, as Markdown."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from benchmarks.timing import cpu_name, median, ratios
from benchmarks.toy_inprocess import CFG, SAMPLER, SIZE

__all__ = ["BEGIN", "END", "TARGETS", "VARIANTS", "report"]

BEGIN, END = "<!-- bench_apply_comfyui: begin -->", "<!-- bench_apply_comfyui: end -->"
VARIANTS = ("plain", "act", "act_gated", "act_both", "reference", "mean_hooks", "folded")
TARGETS = {"act": "<= 1.05", "folded": "<= 1.01"}

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
        f"Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} CPU(s) shared with "
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
        cpu, ratio, paired = ratios(times[name], times["plain"], "cpu")
        wall, wall_ratio, _ = ratios(times[name], times["plain"], "wall")
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
        cpu, ratio, paired = ratios(times["learn"], times["floor"], "cpu")
        floor = median(t.cpu for t in times["floor"])
        _, wall_ratio, _ = ratios(times["learn"], times["floor"], "wall")
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
