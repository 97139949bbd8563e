"""Gated maps on the toy world: what the gate leaves alone, and what it still changes.

Protocol of docs/results_toyworld.md (maps fitted on half of the colour x shape combinations by
AcT Learn Transport's function with ``gate = learned``, its defaults otherwise, the experiment's
site preset; evaluated on held-out prompts; ComfyUI's own sampler, euler, 20 steps, cfg 5,
64x64, the noise of a KSampler with seed 5000 + prompt index and a batch of ``--seeds``). The
same maps applied at λ = 1 by AcT Apply Transport's function with ``gate = learned`` and with
``gate = off`` (the ungated map), against the plain model (λ = 0) on the same noise:

* prompts that are NOT like the source (negation: held-out prompts without the dot; style:
  held-out prompts that already ask for a style): mean absolute pixel change against λ = 0, in
  8-bit levels, and the fraction of images whose mean change is within one level (and whose
  every pixel is);
* prompts like the source (negation: held-out prompts that ask for the dot; style: held-out
  plain prompts): presence of the concept at λ = 1 (the dot should go, stripes should come).

In-process (``benchmarks/toy_methods.Toy``: the checkpoint loaded with ComfyUI's loader, the
pack's ``learn_maps`` and ``patch_model``, all prompts of a variant in one sampler call; on 2
shared cores the server needed about 40 s per KSampler node when this was written). The same
table through the real server: ``python -m benchmarks.toy_gate_server`` (docs/results_gate.md).

``python -m benchmarks.toy_gate`` writes docs/results_gate.md and benchmarks/results/toy_gate.json.
Gated LinEAS maps (AcT Learn Transport's LinEAS defaults, sites auto, one gate per site):
``python -m benchmarks.toy_gate --method lineas --ramp strict`` (benchmarks/results/
toy_gate_lineas.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from evaluation.metrics import read_image
from toyworld.experiments import EXPERIMENTS, heldout_combos
from toyworld.render import STYLES, Scene

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("plain", "gated", "ungated")


def scene_sets(name: str, combos, styles=("striped", "outlined")) -> dict[str, list[Scene]]:
    """``{"other": prompts unlike the source, "source": prompts like it}`` on the colour x
    shape ``combos`` (negation: without / with the dot; style: ``styles`` / plain)."""
    if name == "negation":
        return {"other": [Scene(c, s, st, False) for st in STYLES for c, s in combos],
                "source": [Scene(c, s, st, True) for st in STYLES for c, s in combos]}
    return {"other": [Scene(c, s, st) for st in styles for c, s in combos],
            "source": [Scene(c, s) for c, s in combos]}


def eval_sets(name: str) -> dict[str, list[Scene]]:
    """:func:`scene_sets` on the held-out combinations."""
    return scene_sets(name, heldout_combos())


def change(plain: list[np.ndarray], steered: list[np.ndarray]) -> dict:
    """Mean |difference| in 8-bit levels, and the fractions of images within one level."""
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(plain, steered)]
    means = np.array([float(d.mean()) for d in diffs])
    return {"mean_abs_change": float(means.mean()),
            "within_one_level_mean": float((means <= 1.0).mean()),
            "within_one_level_every_pixel": float(np.mean([int(d.max()) <= 1 for d in diffs])),
            "images": len(diffs)}


def presence(exp, images: list[np.ndarray]) -> float:
    """Fraction of images showing the experiment's concept (the dot, or the style)."""
    hits = [read_image(img).dot if exp.presence == "dot" else read_image(img).style == exp.presence
            for img in images]
    return float(np.mean(hits)) if hits else float("nan")


def learn_gated(toy, exp, ramp: str, method: str = "linear_act"):
    """The gated maps of experiment ``exp``: AcT Learn Transport's defaults on the experiment's
    site preset, or (``method = "lineas"``) LinEAS at the node's defaults (sites auto,
    ``NODE_LINEAS``), every site learned jointly; each site still gets its own gate."""
    if method == "lineas":
        return toy.learn(exp.source, exp.target, sites="auto", method="lineas",
                         support=exp.support, gate=ramp)  # lineas: the node's defaults
    return toy.learn(exp.source, exp.target, sites=exp.sites, support=exp.support, gate=ramp)


def measure(toy, name: str, seeds: int, ramp: str = "balanced",
            method: str = "linear_act") -> dict:
    """Learn the gated maps of one experiment (:func:`learn_gated`) and compare the three
    variants."""
    exp = EXPERIMENTS[name]()
    sets = eval_sets(name)
    start = time.perf_counter()
    maps = learn_gated(toy, exp, ramp, method)
    learn_s = time.perf_counter() - start
    prompts = [s.prompt for s in sets["other"] + sets["source"]]
    apply = toy.pack.nodes.apply.patch_model
    models = {"plain": toy.model, "gated": apply(toy.model, maps, 1.0, gate="learned"),
              "ungated": apply(toy.model, maps, 1.0, gate="off")}
    images, seconds = {}, {}
    for variant, model in models.items():
        start = time.perf_counter()
        images[variant] = list(toy.sample(model, prompts, seeds))
        seconds[variant] = round(time.perf_counter() - start, 1)
    cut = len(sets["other"]) * seeds
    result = {"learn_seconds": round(learn_s, 1), "sample_seconds": seconds,
              "other_prompts": prompts[:len(sets["other"])],
              "source_prompts": prompts[len(sets["other"]):], "seeds": seeds,
              "gates": {site: {"auroc": round(t.gate.auroc, 3),
                               "g_source": round(t.gate.source_gate, 3),
                               "g_target": round(t.gate.target_gate, 3)}
                        for site, t in maps.items()},
              "plain": {"presence_source": presence(exp, images["plain"][cut:]),
                        "presence_other": presence(exp, images["plain"][:cut])}}
    for variant in ("gated", "ungated"):
        result[variant] = {
            "other": change(images["plain"][:cut], images[variant][:cut]),
            "source": change(images["plain"][cut:], images[variant][cut:]),
            "presence_source": presence(exp, images[variant][cut:]),
            "presence_other": presence(exp, images[variant][:cut])}
    return result


def cell(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def gate_row(label: str, change: dict, images: str, presence: str) -> str:
    """One Markdown row of a gate table: the mean change and the fractions within one level on
    the prompts unlike the source (``change``: :func:`change`'s keys), then ``presence``."""
    return (f"| {label} | {cell(change['mean_abs_change'])} | "
            f"{cell(change['within_one_level_mean'])} / "
            f"{cell(change['within_one_level_every_pixel'])} ({images}) | {presence} |")


def table(results: dict) -> str:
    lines = ["| map | prompts unlike the source: mean abs change vs λ = 0 (8-bit levels) | "
             "images within one level: mean / every pixel | prompts like the source: "
             "presence at λ = 1 (at λ = 0) |", "|---|---|---|---|"]
    for name, r in results.items():
        for variant in ("ungated", "gated"):
            o = r[variant]["other"]
            lines.append(gate_row(f"{name}, {variant}", o, f"{o['images']} images",
                                  f"{cell(r[variant]['presence_source'])} "
                                  f"({cell(r['plain']['presence_source'])})"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--experiments", default="negation,style")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ramp", default="balanced", help="gate ramp (act_core.gate.RAMPS)")
    ap.add_argument("--method", default="linear_act", choices=("linear_act", "lineas"),
                    help="lineas: AcT Learn Transport's LinEAS defaults (sites auto)")
    ap.add_argument("--raw", type=Path, default=None,
                    help="default benchmarks/results/toy_gate.json (toy_gate_lineas.json with "
                         "--method lineas)")
    args = ap.parse_args(argv)
    if args.raw is None:
        name = "toy_gate.json" if args.method == "linear_act" else "toy_gate_lineas.json"
        args.raw = ROOT / "benchmarks" / "results" / name
    import torch

    from benchmarks.toy_methods import Toy

    torch.set_num_threads(args.threads)
    toy = Toy()
    results = {}
    for name in args.experiments.split(","):
        key = name if args.ramp == "balanced" else f"{name}_{args.ramp}"
        key += "" if args.method == "linear_act" else f"_{args.method}"
        results[key] = measure(toy, name, args.seeds, args.ramp, args.method)
        print(f"{key}: " + json.dumps({k: results[key][k]
                                       for k in ("plain", "gated", "ungated")}), flush=True)
    earlier = json.loads(args.raw.read_text()) if args.raw.exists() else {}
    args.raw.write_text(json.dumps({**earlier, **results}, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
