"""Toy world through the real ComfyUI server: two sliders at once, and a slider on half the steps.

The server-side twin of ``benchmarks/toy_sliders_eval.py`` (same prompts, sites, settings and
seeds), driven over ComfyUI's HTTP API with the pack's own nodes:

- two AcT Learn Transport nodes learn the *style* map set (plain -> striped prompts,
  cross-attention outputs) and the *dot* map set (prompts with a black dot -> without, norms +
  cross-attention outputs), unbounded support, fitted on half of the colour x shape
  combinations (``evaluation.act_eval``);
- composition, on the held-out "a {colour} {shape} with a black dot" prompts: nothing, style
  alone and dot alone (AcT Apply Transport), both with the AcT Slider Panel (style first) and
  both as two chained AcT Apply Transport nodes (style, then dot), every strength 1; the panel's
  and the chain's saved images are compared bit for bit;
- schedule, on the held-out plain prompts: the style slider (panel slot 1) on every step, on
  the first half only (end_percent 0.5) and on the second half only (start_percent 0.5), with
  where each changes the image (``toy_sliders_eval._where_changed``).

Stock KSampler, euler, 20 steps, cfg 5, 64x64, seed 5000 + prompt index, the seeds as the batch.
One graph per row; every graph carries both learn nodes with identical inputs, so ComfyUI's
cache (and the node's own memo) learns each map set once per server run: the JSON records, per
row, which learn nodes ran and which came from the cache. The server runs with
``OMP_NUM_THREADS=1`` (torch's intra-op threads follow it). Run::

    nice -n 5 .venv/bin/python -m benchmarks.toy_sliders_server --seeds 4

Writes ``benchmarks/results/toy_sliders_server.json`` and
``docs/images/sliders_server_{composition,schedule}_grid.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.toy_sliders_eval import _score, _where_changed
from harness.comfy_server import add_sampling

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("toy_sliders_server")

LEARN = {"style": "learn_style", "negation": "learn_dot"}


def _learn_node(exp, *, fit_batch: int = 8) -> dict:
    """AcT Learn Transport with the toy-world experiments' settings (as evaluation.act_eval)."""
    return {"class_type": "ActLearnTransport", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1],
        "source_prompts": "\n".join(exp.source), "target_prompts": "\n".join(exp.target),
        "sites": exp.sites, "pattern": "", "method": "linear_act", "support": exp.support,
        "incremental": True, "stages": 8, "collect_at": 0.0, "timestep_ranges": 1, "seed": 0,
        "latent": ["fitlat", 0]}}


def _apply(model: list, maps: str, **range_) -> dict:
    return {"class_type": "ActApplyTransport", "inputs": {
        "model": model, "maps": [maps, 0], "strength": 1.0,
        "start_percent": range_.get("start_percent", 0.0),
        "end_percent": range_.get("end_percent", 1.0), "apply_to": "conditional",
        "support": "from maps"}}


def _panel(sliders: list[tuple[str, str, dict]]) -> dict:
    inputs: dict = {"model": ["ckpt", 0], "apply_to": "conditional", "support": "from maps"}
    for i, (label, maps, range_) in enumerate(sliders, start=1):
        inputs.update({f"maps_{i}": [maps, 0], f"label_{i}": label, f"strength_{i}": 1.0,
                       f"curve_{i}": "constant",
                       f"start_percent_{i}": range_.get("start_percent", 0.0),
                       f"end_percent_{i}": range_.get("end_percent", 1.0)})
    return {"class_type": "ActSliderPanel", "inputs": inputs}


def shared_nodes(experiments: dict, seeds: int) -> dict:
    """Every model variant of both measurements; a graph runs only what its outputs need."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple",
                 "inputs": {"ckpt_name": "act_toyworld_sd15.safetensors"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "fitlat": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 64, "height": 64, "batch_size": 8}},
        "lat": {"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": seeds}},
        **{LEARN[name]: _learn_node(exp) for name, exp in experiments.items()},
        "style_alone": _apply(["ckpt", 0], "learn_style"),
        "dot_alone": _apply(["ckpt", 0], "learn_dot"),
        "both_panel": _panel([("style", "learn_style", {}), ("dot", "learn_dot", {})]),
        "chain_1": _apply(["ckpt", 0], "learn_style"),
        "chain_2": _apply(["chain_1", 0], "learn_dot"),
        "style_whole": _panel([("style", "learn_style", {})]),
        "style_first": _panel([("style", "learn_style", {"end_percent": 0.5})]),
        "style_second": _panel([("style", "learn_style", {"start_percent": 0.5})]),
    }
    return g


COMPOSITION = {"style alone": "style_alone", "dot alone": "dot_alone",
               "both (panel)": "both_panel", "both (chained nodes)": "chain_2",
               "none": "ckpt"}
SCHEDULE = {"none": "ckpt", "whole": "style_whole", "first half": "style_first",
            "second half": "style_second"}


def row_graph(shared: dict, model_node: str, prompts: list[str], steps: int) -> dict:
    g = dict(shared)
    for k, text in enumerate(prompts):
        g[f"pos{k}"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text,
                                                                  "clip": ["ckpt", 1]}}
        add_sampling(g, str(k), model=[model_node, 0], positive=[f"pos{k}", 0], seed=5000 + k,
                     steps=steps, prefix=f"sliders_{model_node}_{k}")
    return g


def _learn_status(entry: dict) -> dict:
    """Which learn nodes this graph executed and which ComfyUI served from its cache."""
    cached, ran = set(), set()
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_cached":
            cached.update(data.get("nodes", []))
    ran = set(entry.get("outputs", {})) - cached
    return {name: ("cached" if node in cached else "ran" if node in ran else "not needed")
            for name, node in LEARN.items()}


def run_rows(server, shared: dict, rows: dict, scenes: list, steps: int) -> tuple[dict, dict]:
    images, info = {}, {}
    prompts = [s.prompt for s in scenes]
    for name, node in rows.items():
        start = time.perf_counter()
        entry = server.run(row_graph(shared, node, prompts, steps), timeout=3600)
        images[name] = [server.images(entry, node_id=f"save{k}") for k in range(len(scenes))]
        report = {nid: (out.get("text") or [""])[0] for nid, out in entry["outputs"].items()
                  if nid in ("both_panel", *LEARN.values()) and out.get("text")}
        info[name] = {"seconds": round(time.perf_counter() - start, 1),
                      "learn": _learn_status(entry), **({"reports": report} if report else {})}
        log.info("%s: %.0f s, learn %s", name, info[name]["seconds"], info[name]["learn"])
    return images, info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=None,
                    help="only the first N held-out prompts (default: all 6)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/toy_sliders_server.json")
    ap.add_argument("--images", type=Path, default=ROOT / "docs/images")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the server process
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    from evaluation.grids import save_grid
    from harness.comfy_server import ComfyServer
    from toyworld.experiments import EXPERIMENTS
    from toyworld.render import Scene

    experiments = {name: EXPERIMENTS[name]() for name in LEARN}
    heldout = experiments["style"].heldout[:args.prompts]  # combinations not fitted on
    dotted = [Scene(s.colour, s.shape, "plain", True) for s in heldout]
    shared = shared_nodes(experiments, args.seeds)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()},
                    "threads": os.environ["OMP_NUM_THREADS"]}
    start = time.perf_counter()
    with ComfyServer() as server:
        images, info = run_rows(server, shared, COMPOSITION, dotted, args.steps)
        panel, chain = images["both (panel)"], images["both (chained nodes)"]
        result["panel_equals_chained"] = all(
            np.array_equal(a, b) for pa, pb in zip(panel, chain, strict=True)
            for a, b in zip(pa, pb, strict=True))
        result["panel_vs_chained_max_diff"] = max(
            int(np.abs(a.astype(int) - b.astype(int)).max())
            for pa, pb in zip(panel, chain) for a, b in zip(pa, pb))
        result["composition"] = {name: {**_score(dotted, images[name]), **info[name]}
                                 for name in COMPOSITION}
        cols = ["none", "style alone", "dot alone", "both (panel)", "both (chained nodes)"]
        save_grid([[images[n][k][0] for n in cols] for k in range(len(dotted))],
                  [s.prompt for s in dotted], args.images / "sliders_server_composition_grid.png",
                  col_labels=cols)
        images, info = run_rows(server, shared, SCHEDULE, heldout, args.steps)
        schedule = {}
        for name in SCHEDULE:
            schedule[name] = {**_score(heldout, images[name]), **info[name]}
            if name != "none":
                schedule[name]["change"] = _where_changed(images["none"], images[name])
        result["schedule"] = schedule
        save_grid([[images[n][k][0] for n in SCHEDULE] for k in range(len(heldout))],
                  [s.prompt for s in heldout], args.images / "sliders_server_schedule_grid.png",
                  col_labels=list(SCHEDULE))
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
