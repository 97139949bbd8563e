"""``make demo``: render toy-world prompts through the real ComfyUI server and save a grid.

Starts ComfyUI 0.30 (CPU) on a free loopback port with this pack installed and the toy
checkpoint in its models folder, runs the stock txt2img graph for a set of prompts, and writes a
labelled grid PNG. When the AcT nodes are available it also renders a strength (λ) sweep.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .comfy_server import ComfyServer, txt2img_graph
from .evaluate import save_grid

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


if __name__ == "__main__":
    main()
