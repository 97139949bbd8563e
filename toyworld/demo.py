"""``make demo``: render toy-world prompts through the real ComfyUI server and save a grid.

Starts ComfyUI 0.30 (CPU) on a free loopback port with this pack installed and the toy
checkpoint in its models folder, runs the stock txt2img graph for a set of prompts, and writes a
labelled grid PNG; then learns maps that remove the black dot with ActLearnTransport (prompts
that ask for it -> the same prompts without it) and renders a held-out prompt that asks for the
dot at λ = 0, 0.25, 0.5, 0.75, 1 with ActStrengthGrid.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .act_eval import NEGATION_SITES, fit_combos, heldout_combos
from .comfy_server import ComfyServer, txt2img_graph
from .evaluate import save_grid
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


def strength_grid_graph(prompt: str, seed: int, seeds: int) -> dict:
    """Learn to remove the black dot on some prompts, then a λ grid on a held-out prompt."""
    g = txt2img_graph(prompt, seed=seed, batch=seeds, prefix="demo_act")
    del g["5"], g["6"], g["7"]
    g["learn"] = {"class_type": "ActLearnTransport", "inputs": {
        "model": ["1", 0], "clip": ["1", 1],
        "source_prompts": "\n".join(Scene(c, s, dot=True).prompt for c, s in fit_combos()),
        "target_prompts": "\n".join(Scene(c, s).prompt for c, s in fit_combos()),
        "sites": NEGATION_SITES, "pattern": "", "method": "linear_act", "support": "unbounded",
        "incremental": True, "stages": 8, "collect_at": 0.0, "timestep_ranges": 1, "seed": 0,
        "latent": ["4", 0]}}
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
        prompt = Scene(*heldout_combos()[-1], dot=True).prompt  # not among the learned ones
        entry = server.run(strength_grid_graph(prompt, seed=7, seeds=args.seeds))
        grid = server.images(entry, node_id="save")[0]
    from PIL import Image

    act_path = (args.out / "demo_act_strength_grid.png").resolve()
    Image.fromarray(grid).save(act_path)
    logging.info("wrote %s: '%s' with maps that remove the dot, at λ = 0 ... 1 (rows: seeds) "
                 "(%.0f s)", act_path, prompt, time.time() - t0)


if __name__ == "__main__":
    main()
