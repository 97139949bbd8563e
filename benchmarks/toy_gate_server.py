"""Gated maps on the toy world THROUGH THE REAL COMFYUI SERVER (issue 23's protocol).

The same protocol as :mod:`benchmarks.toy_gate` (maps learned by AcT Learn Transport with its
defaults and the experiment's site preset, applied by AcT Apply Transport at λ = 1 with the
learned gate and with ``gate = off``, against the plain model on the same noise; euler, 20
steps, cfg 5, 64x64, a batch of ``--seeds`` in the latent, KSampler seed = base + prompt
index), but every image is made by ComfyUI's server from an API graph posted over HTTP
(:class:`harness.comfy_server.ComfyServer`). Both ramps are learned by the node
(``gate = learned balanced`` and ``learned strict``: two AcT Learn Transport nodes on the same
prompts), so one run compares ungated, balanced and strict.

Each prompt is one graph (the learn and loader nodes are cached by the server between graphs),
and the raw per-image numbers are written after every graph, so a run stopped by
``--budget-min`` keeps what it measured. Prompts are taken round robin from four groups:

* ``heldout_other`` / ``heldout_source``: the held-out prompts of :func:`toy_gate.eval_sets`
  (negation: without / with the dot; style: asking for a style / plain);
* ``dev_other`` / ``dev_source``: the same kinds of prompt on the FIT colour x shape
  combinations with other noise (base seed 7000): the data to choose the ramp on, never the
  held-out prompts (for negation these are the fitting prompts themselves, for style the
  outlined ones were not fitted on).

Variants: prompts unlike the source get plain, ungated, gated balanced, gated strict (pixel
change against plain); prompts like the source get plain, gated balanced, gated strict
(concept presence).

    python -m benchmarks.toy_gate_server --seeds 3 --budget-min 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.toy_gate import cell, eval_sets, gate_row, scene_sets
from evaluation.metrics import read_image
from harness.comfy_server import add_sampling
from toyworld.experiments import CKPT, EXPERIMENTS, fit_combos
from toyworld.render import Scene

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("toy_gate_server")

RAMP_VARIANTS = {"balanced": "learned balanced", "strict": "learned strict"}
GROUPS = ("heldout_other", "heldout_source", "dev_other", "dev_source")
BASE_SEED = {"heldout": 5000, "dev": 7000}


def dev_sets(name: str) -> dict[str, list[Scene]]:
    """The kinds of :func:`toy_gate.eval_sets`, on the fitting colour x shape combinations."""
    return scene_sets(name, fit_combos(), ("outlined", "striped"))


def schedule(name: str) -> list[tuple[str, int, Scene]]:
    """``(group, prompt index within its split, scene)`` round robin over :data:`GROUPS`.

    Within a group the order interleaves the styles, so a partial run still covers them."""
    held, dev = eval_sets(name), dev_sets(name)
    groups = {"heldout_other": held["other"], "heldout_source": held["source"],
              "dev_other": dev["other"], "dev_source": dev["source"]}
    order = {}
    for group, scenes in groups.items():
        # index k of the split (its KSampler seed offset), visited with stride through styles
        n_styles = len({sc.style for sc in scenes})
        per = len(scenes) // n_styles
        order[group] = [(k, scenes[k]) for j in range(per) for k in range(j, len(scenes), per)]
    out = []
    for i in range(max(len(v) for v in order.values())):
        out += [(g, *order[g][i]) for g in GROUPS if i < len(order[g])]
    return out


def graph(exp, scene: Scene, seed: int, seeds: int, variants: list[str]) -> dict:
    """One prompt: two AcT Learn Transport nodes (the ramps), the applies, a KSampler each."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "fitlat": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 64, "height": 64, "batch_size": 8}},
        "lat": {"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": seeds}},
        "pos": {"class_type": "CLIPTextEncode",
                "inputs": {"text": scene.prompt, "clip": ["ckpt", 1]}},
    }
    for ramp, choice in RAMP_VARIANTS.items():
        g[f"learn_{ramp}"] = {"class_type": "ActLearnTransport", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1],
            "source_prompts": "\n".join(exp.source), "target_prompts": "\n".join(exp.target),
            "sites": exp.sites, "pattern": "", "method": "linear_act",
            "support": exp.support, "incremental": True, "stages": 8, "collect_at": 0.0,
            "timestep_ranges": 1, "seed": 0, "latent": ["fitlat", 0], "gate": choice}}
    applies = {"ungated": ("balanced", "off"), "balanced": ("balanced", "learned"),
               "strict": ("strict", "learned")}
    for variant in variants:
        model = ["ckpt", 0]
        if variant != "plain":
            ramp, gate = applies[variant]
            g[f"apply_{variant}"] = {"class_type": "ActApplyTransport", "inputs": {
                "model": ["ckpt", 0], "maps": [f"learn_{ramp}", 0], "strength": 1.0,
                "start_percent": 0.0, "end_percent": 1.0, "apply_to": "conditional",
                "support": "from maps", "gate": gate}}
            model = [f"apply_{variant}", 0]
        add_sampling(g, f"_{variant}", model=model, positive=["pos", 0], seed=seed,
                     prefix=f"gate_{variant}", names=("ks", "dec", "img"))
    return g


def has(exp, img: np.ndarray) -> bool:
    scene = read_image(img)
    return bool(scene.dot) if exp.presence == "dot" else scene.style == exp.presence


def run_experiment(server, name: str, seeds: int, budget_s: float, raw: dict, save) -> None:
    """Submit one graph per scheduled prompt until the budget is spent; fill ``raw[name]``."""
    exp = EXPERIMENTS[name]()
    rows = raw.setdefault(name, {"rows": []})["rows"]
    done = {(r["group"], r["index"]) for r in rows}
    start = time.perf_counter()
    for group, k, scene in schedule(name):
        if (group, k) in done:
            continue
        if time.perf_counter() - start > budget_s:
            log.info("%s: budget spent after %d prompts", name, len(rows))
            break
        split, kind = group.split("_")
        variants = (["plain", "ungated", "balanced", "strict"] if kind == "other"
                    else ["plain", "balanced", "strict"])
        begin = time.perf_counter()
        entry = server.run(graph(exp, scene, BASE_SEED[split] + k, seeds, variants),
                           timeout=3600)
        images = {v: [im.astype(np.int16) for im in server.images(entry, f"img_{v}")]
                  for v in variants}
        row = {"group": group, "index": k, "prompt": scene.prompt,
               "seconds": round(time.perf_counter() - begin, 1),
               "presence": {v: [has(exp, im.astype(np.uint8)) for im in images[v]]
                            for v in variants}}
        if kind == "other":
            row["change"] = {v: [float(np.abs(a - b).mean()) for a, b in
                                 zip(images["plain"], images[v])] for v in variants[1:]}
            row["max_change"] = {v: [int(np.abs(a - b).max()) for a, b in
                                     zip(images["plain"], images[v])] for v in variants[1:]}
        rows.append(row)
        save()
        log.info("%s %s %d (%s): %.0f s", name, group, k, scene.prompt, row["seconds"])


def summary(raw: dict) -> dict:
    """Per experiment, split and variant: mean change, within-one-level fractions, presence."""
    out = {}
    for name, body in raw.items():
        if name == "meta":
            continue
        for split in ("heldout", "dev"):
            other = [r for r in body["rows"] if r["group"] == f"{split}_other"]
            source = [r for r in body["rows"] if r["group"] == f"{split}_source"]
            for variant in ("ungated", "balanced", "strict"):
                means = [m for r in other for m in r["change"][variant]]
                maxes = [m for r in other for m in r["max_change"][variant]]
                pres = [p for r in source for p in r["presence"].get(variant, [])]
                out[f"{name}/{split}/{variant}"] = {
                    "mean_abs_change": float(np.mean(means)) if means else None,
                    "within_one_level_mean": float(np.mean([m <= 1.0 for m in means]))
                    if means else None,
                    "within_one_level_every_pixel": float(np.mean([m <= 1 for m in maxes]))
                    if maxes else None,
                    "images_other": len(means), "prompts_other": len(other),
                    "presence_source": float(np.mean(pres)) if pres else None,
                    "images_source": len(pres)}
            plain = [p for r in source for p in r["presence"]["plain"]]
            out[f"{name}/{split}/plain"] = {
                "presence_source": float(np.mean(plain)) if plain else None}
    return out


def table(summ: dict, split: str) -> str:
    lines = ["| map, λ = 1 | prompts unlike the source: mean abs change vs λ = 0 (8-bit levels) "
             "| images within one level: mean / every pixel (images) | prompts like the source: "
             "presence at λ = 1 (λ = 0; images) |", "|---|---|---|---|"]
    for name in ("negation", "style"):
        plain = summ.get(f"{name}/{split}/plain", {}).get("presence_source")
        for variant in ("ungated", "balanced", "strict"):
            s = summ.get(f"{name}/{split}/{variant}")
            if s is None:
                continue
            label = variant if variant == "ungated" else f"gated ({variant})"
            pres = (f"{cell(s['presence_source'])} ({cell(plain)}; {s['images_source']})"
                    if variant != "ungated" else "-")
            lines.append(gate_row(f"{name}, {label}", s, str(s["images_other"]), pres))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="images per prompt (latent batch)")
    ap.add_argument("--experiments", default="negation,style")
    ap.add_argument("--budget-min", type=float, nargs="+", default=[60.0],
                    help="minutes of submissions per experiment (one value, or one each)")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads of the server")
    ap.add_argument("--raw", type=Path,
                    default=ROOT / "benchmarks" / "results" / "toy_gate_server.json")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --raw")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from harness.comfy_server import ComfyServer

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits this environment
    raw = json.loads(args.raw.read_text()) if args.resume and args.raw.exists() else {}
    raw["meta"] = {"seeds": args.seeds, "threads": args.threads, "budget_min": args.budget_min,
                   "command": "python -m benchmarks.toy_gate_server " + " ".join(argv or [])}

    def save() -> None:
        raw["summary"] = summary({k: v for k, v in raw.items() if k != "summary"})
        args.raw.write_text(json.dumps(raw, indent=1) + "\n")

    names = args.experiments.split(",")
    budgets = args.budget_min * len(names) if len(args.budget_min) == 1 else args.budget_min
    with ComfyServer() as server:
        for name, budget in zip(names, budgets):
            run_experiment(server, name, args.seeds, 60.0 * budget, raw, save)
    save()
    summ = raw["summary"]
    print("held out\n" + table(summ, "heldout") + "\ndev\n" + table(summ, "dev"))


if __name__ == "__main__":
    main()
