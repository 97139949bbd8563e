"""``make demo``: render toy-world prompts through the real ComfyUI server and save grids.

Starts ComfyUI 0.30 (CPU) on a free loopback port with this pack installed and the toy
checkpoint in its models folder, runs the stock txt2img graph for a set of prompts, and writes a
labelled grid PNG; then learns two sets of maps with ActLearnTransport and renders a held-out
prompt at λ = 0, 0.25, 0.5, 0.75, 1 with ActStrengthGrid for each: maps that remove the black
dot (prompts that ask for it -> the same prompts without it) and maps that add the striped style
(plain prompts -> the same prompts with "striped").
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from evaluation.grids import save_grid
from harness.comfy_server import ComfyServer, txt2img_graph

from .experiments import NEGATION_SITES, fit_combos, heldout_combos, style_experiment
from .render import Scene

__all__ = ["main"]

DEMO_PROMPTS = [
    "a red circle", "a green square", "a blue triangle", "a yellow circle",
    "a striped red square", "a striped blue circle", "a outlined green triangle",
    "a outlined yellow square", "a red triangle with a black dot",
    "a striped green circle with a black dot",
]


def render_prompts(server: ComfyServer, prompts: list[str], seeds: int) -> list[list]:
    rows = []
    for i, prompt in enumerate(prompts):
        entry = server.run(txt2img_graph(prompt, seed=42 + i, batch=seeds, prefix=f"demo{i}"))
        rows.append(server.images(entry))
    return rows


def strength_grid_graph(prompt: str, seed: int, seeds: int, source: list[str],
                        target: list[str], sites: str) -> dict:
    """Learn maps from ``source`` to ``target`` prompts, then a λ grid on ``prompt``."""
    g = txt2img_graph(prompt, seed=seed, batch=seeds, prefix="demo_act")
    del g["5"], g["6"], g["7"]
    g["learn"] = {"class_type": "ActLearnTransport", "inputs": {
        "model": ["1", 0], "clip": ["1", 1], "source_prompts": "\n".join(source),
        "target_prompts": "\n".join(target), "sites": sites, "pattern": "",
        "method": "linear_act", "support": "unbounded", "incremental": True, "stages": 8,
        "collect_at": 0.0, "timestep_ranges": 1, "seed": 0, "latent": ["4", 0]}}
    g["grid"] = {"class_type": "ActStrengthGrid", "inputs": {
        "model": ["1", 0], "maps": ["learn", 0], "positive": ["2", 0], "negative": ["3", 0],
        "latent_image": ["4", 0], "vae": ["1", 2], "strengths": "0, 0.25, 0.5, 0.75, 1",
        "seed": seed, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}}
    g["save"] = {"class_type": "SaveImage",
                 "inputs": {"images": ["grid", 0], "filename_prefix": "demo_act_grid"}}
    return g


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    t0 = time.time()
    with ComfyServer() as server:
        logging.info("ComfyUI up at %s (%.0f s)", server.url, time.time() - t0)
        rows = render_prompts(server, DEMO_PROMPTS, args.seeds)
        path = (args.out / "demo_toyworld_grid.png").resolve()
        save_grid(rows, DEMO_PROMPTS, path, col_labels=[f"seed {i}" for i in range(args.seeds)])
        logging.info("wrote %s (%d prompts x %d seeds, %.0f s)", path, len(rows), args.seeds,
                     time.time() - t0)
        fit = fit_combos()
        held = heldout_combos()[-1]  # not among the learned ones
        style = style_experiment()  # the same plain -> striped prompts and sites as act_eval
        grids = {
            "demo_act_negation_grid.png": (
                "maps that remove the dot", Scene(*held, dot=True).prompt,
                [Scene(c, s, dot=True).prompt for c, s in fit],
                [Scene(c, s).prompt for c, s in fit], NEGATION_SITES),
            "demo_act_style_grid.png": (
                "maps that add stripes", style.heldout[-1].prompt, style.source, style.target,
                style.sites),
        }
        for name, (what, prompt, source, target, sites) in grids.items():
            entry = server.run(strength_grid_graph(prompt, 7, args.seeds, source, target, sites))
            grid = server.images(entry, node_id="save")[0]
            path = (args.out / name).resolve()
            _save_png(grid, path)
            logging.info("wrote %s: '%s' with %s, at λ = 0 ... 1 (rows: seeds) (%.0f s)",
                         path, prompt, what, time.time() - t0)


def _save_png(image, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


if __name__ == "__main__":
    main()
