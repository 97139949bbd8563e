"""Overhead of N map sets in one patch (AcT Slider Panel) against N chained patches.

The toy checkpoint through ComfyUI's own sampling (``comfy.sample.sample``: euler, 20 steps,
cfg 5, 64x64, batch 1, conditional half). Maps: linear_act maps learned on all 27 norm sites of
the UNet (unbounded support); set k of N is the same maps with every unit's change scaled by
``1 / (k + 1)`` (``scale' = 1 + (scale - 1) / (k + 1)``, ``shift' = shift / (k + 1)``), so all
N sets act on every site. Variants per N: ``plain`` (no AcT), ``chained`` (N AcT Apply
Transport patches, one wrapper and one patched forward per set and site), ``panel`` (one AcT
Slider Panel: one wrapper, one patched forward per site). Panel and chained samples are checked
bit-identical. CPU time of the process with one torch thread, the variants' order rotating
from repeat to repeat; reported: median time and median per-repeat ratios.

With ``--host``: the host (Python) cost per site and model call of N sets, chained against
composed, where the arithmetic is negligible (:func:`host_cost`); on an accelerator this is what
a sampler with hundreds of sites pays (docs/results.md, issue 24).

Usage: ``.venv/bin/python -m benchmarks.bench_sliders [--repeats 5] [--n 1,2,4] [--host]``;
writes benchmarks/results/bench_sliders.json (or bench_sliders_host.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from benchmarks.timing import alternate, median, ratios, rotation, timed

ROOT = Path(__file__).resolve().parent.parent


PROMPT, FIT_SOURCE, FIT_TARGET = "a red circle", ["a red circle", "a blue square",
                                                  "a green triangle"], [
    "a striped red circle", "a striped blue square", "a striped green triangle"]


def _scaled(maps, factor: float):
    from act_core import MapSet

    return MapSet({site: dataclasses.replace(t, scale=1 + (t.scale - 1) * factor,
                                             shift=t.shift * factor)
                   for site, t in maps.items()}, maps.metadata)


def host_cost(sites: int, sets: int, repeats: int, calls: int = 5) -> dict[str, float]:
    """Host cost per site and model call (µs above the plain model) of ``sets`` map sets on
    every site, chained (nested plans, as chained Apply nodes run them) or composed (one
    ComposedPlan, as the panel runs them); the model and maps of benchmarks/bench_site_cost.py
    (half GroupNorm sites in channel mode, half LayerNorm sites in token mode, tiny tensors,
    CPU, one thread: the arithmetic is negligible)."""
    from contextlib import ExitStack

    import torch

    from act_core.apply import TransportPlan
    from act_core.compose import ComposedPlan
    from benchmarks.bench_site_cost import WIDTH, Norms, _map

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    model = Norms(sites).eval()
    plans = []
    for _ in range(sets):
        maps = {f"g.{i}": _map("channels", gen) for i in range(sites // 2)}
        maps.update({f"l.{i}": _map("tokens", gen) for i in range(sites // 2)})
        plans.append(TransportPlan(model, maps, "unbounded"))
    composed = ComposedPlan(plans)
    x, t = torch.randn(2, WIDTH, 2, 2, generator=gen), torch.randn(2, 3, WIDTH, generator=gen)
    items = torch.tensor([1.0, 0.0])  # the conditional half, as the nodes' default

    def chained() -> None:
        with ExitStack() as stack:
            for plan in plans:
                stack.enter_context(plan.applied(items))
            model(x, t)

    def panel() -> None:
        with composed.applied([items] * sets):
            model(x, t)

    variants = {"plain": lambda: model(x, t), "chained": chained, "panel": panel}
    with torch.inference_mode():
        times = {k: [t.thread for t in v] for k, v in alternate(variants, repeats, calls).items()}
        same = torch.equal(torch.cat([o.flatten() for o in _outputs(chained, model, x, t)]),
                           torch.cat([o.flatten() for o in _outputs(panel, model, x, t)]))
    plain = median(times["plain"])
    cost = {name: (median(times[name]) - plain) / sites * 1e6
            for name in ("chained", "panel")}
    return {"sets": sets, "sites": sites, "identical": same,
            "chained_us_per_site": round(cost["chained"], 2),
            "panel_us_per_site": round(cost["panel"], 2),
            "panel_over_chained": round(cost["panel"] / cost["chained"], 3),
            "plain_ms": round(plain * 1e3, 3)}


def _outputs(run, model, x, t):
    seen = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--host", action="store_true",
                    help="only the host cost per site (256 sites, tiny tensors)")
    args = ap.parse_args(argv)
    if args.host:
        rows = [host_cost(256, int(n), max(args.repeats, 20)) for n in args.n.split(",")]
        for row in rows:
            print(json.dumps(row), flush=True)
        out = ROOT / "benchmarks/results/bench_sliders_host.json"
        out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
        return
    import torch

    torch.set_num_threads(1)
    from benchmarks.toy_lineas_cost import _pack

    learn = _pack()
    logging.getLogger().setLevel(logging.WARNING)
    import importlib

    import comfy.model_management
    import comfy.sample
    import comfy.sd

    from toyworld.checkpoint import checkpoint_path

    apply = importlib.import_module("act_pack.nodes.apply")
    panel = importlib.import_module("act_pack.nodes.panel")
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    encode = learn.encode_prompts
    with torch.inference_mode():
        base = learn.learn_maps(model, encode(clip, FIT_SOURCE), encode(clip, FIT_TARGET),
                                sites="auto", support="unbounded", incremental=False,
                                latent={"samples": torch.zeros(1, 4, 8, 8)})
        positive, negative = encode(clip, [PROMPT, ""])
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    rows = []
    for n in [int(v) for v in args.n.split(",")]:
        sets = [_scaled(base, 1 / (k + 1)) for k in range(n)]
        chained = model
        for maps in sets:
            chained = apply.patch_model(chained, maps, 1.0)
        models = {"plain": model, "chained": chained,
                  "panel": panel.patch_panel(model, [panel.Slider(m, 1.0) for m in sets])[0]}
        times: dict[str, list[float]] = {k: [] for k in models}
        outs = {}

        def sample(name, models=models, outs=outs):
            with torch.inference_mode():
                outs[name] = comfy.sample.sample(
                    models[name], noise, args.steps, 5.0, "euler", "normal", positive,
                    negative, latent, seed=0, disable_pbar=True)

        for repeat in range(args.repeats + 1):
            for name in rotation(list(models), repeat):
                comfy.model_management.load_models_gpu([models[name]])  # untimed
                seconds = timed(lambda name=name: sample(name)).cpu
                if repeat:  # the first round is a warm-up
                    times[name].append(seconds)
        row = {"n": n, "sites": len(base), "identical": bool(torch.equal(outs["panel"],
                                                                         outs["chained"])),
               **{f"{k}_s": round(median(v), 3) for k, v in times.items()}}
        pairs = {k: [(t,) for t in v] for k, v in times.items()}  # one clock each
        for k in ("chained", "panel"):
            row[f"{k}_over_plain"] = round(ratios(pairs[k], pairs["plain"], 0)[2], 3)
        row["panel_over_chained"] = round(ratios(pairs["panel"], pairs["chained"], 0)[2], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "benchmarks/results/bench_sliders.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
