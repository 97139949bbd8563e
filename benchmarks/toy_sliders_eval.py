"""Toy world, in-process: two sliders at once, and a style slider on half of the steps.

Learns, with the pack's own learn function (as AcT Learn Transport runs it, the toy-world
experiments' sites and supports), a *style* map set (plain -> striped prompts, cross-attention
outputs) and a *dot* map set (prompts with a black dot -> without, norms + cross-attention
outputs); then samples held-out prompts through ComfyUI's KSampler path (euler, 20 steps, cfg 5,
64x64, conditional half) and reads every image with evaluation.metrics:

1. composition, on held-out "a {colour} {shape} with a black dot" prompts: nothing, style
   alone, dot alone, both with the AcT Slider Panel (style first), both in the other order,
   and both as chained AcT Apply Transport nodes (checked bit-identical to the panel);
2. schedule, on held-out plain prompts: the style slider on the whole schedule, on the first
   half only (end 0.5) and the second half only (start 0.5); per image, how much it changes
   the shape and the background, coarsely (8x8 block means: layout, colour) and finely (what
   is left: stripes, edges), against the unsteered image.

Writes benchmarks/results/toy_sliders.json and grids under docs/images/. Run:
``.venv/bin/python -m benchmarks.toy_sliders_eval --seeds 4``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.toy_lineas_cost import _pack

ROOT = Path(__file__).resolve().parent.parent


def _score(scenes, images) -> dict:
    from evaluation.metrics import read_image

    n = striped = dot = colour = shape = 0
    for scene, batch in zip(scenes, images):
        for img in batch:
            r = read_image(img)
            n += 1
            striped += r.style == "striped"
            dot += r.dot
            colour += r.colour == scene.colour
            shape += r.shape == scene.shape
    return {"images": n, "striped": striped / n, "dot": dot / n, "colour": colour / n,
            "shape": shape / n}


def _where_changed(base, images) -> dict:
    """Mean absolute change (0..255 scale) on the shape and on the background, split into a
    coarse part (8x8 block means) and a fine part (the rest)."""
    out = {"shape_coarse": [], "shape_fine": [], "background_coarse": [],
           "background_fine": []}
    for b_batch, i_batch in zip(base, images):
        for b, i in zip(b_batch, i_batch):
            b, i = b.astype(np.float32), i.astype(np.float32)
            shape = np.abs(b - 214.0).max(axis=-1) > 50  # background is light grey (0.84)
            diff = i - b  # (H, W, 3)
            h, w = diff.shape[:2]
            blocks = diff.reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))
            coarse = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
            fine = diff - coarse
            for part, mask in (("shape", shape), ("background", ~shape)):
                if mask.any():
                    out[f"{part}_coarse"].append(float(np.abs(coarse[mask]).mean()))
                    out[f"{part}_fine"].append(float(np.abs(fine[mask]).mean()))
    return {k: round(float(np.mean(v)), 2) for k, v in out.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder to keep the learned maps in and reuse them from")
    args = ap.parse_args(argv)
    learn = _pack()
    apply = sys.modules["act_pack.nodes.apply"]
    import importlib

    panel = importlib.import_module("act_pack.nodes.panel")
    import comfy.sample
    import comfy.sd
    import torch

    from act_core import load_maps, save_maps
    from evaluation.grids import save_grid
    from toyworld.checkpoint import checkpoint_path
    from toyworld.experiments import EXPERIMENTS
    from toyworld.render import Scene

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=True, output_clip=True)
    negative = learn.encode_prompts(clip, [""])[0]
    latent = torch.zeros(args.seeds, 4, 8, 8)

    def sample(patched, scenes) -> list:
        images = []
        for k, scene in enumerate(scenes):
            positive = learn.encode_prompts(clip, [scene.prompt])[0]
            noise = comfy.sample.prepare_noise(latent, 5000 + k)
            out = comfy.sample.sample(patched, noise, args.steps, 5.0, "euler", "normal",
                                      positive, negative, latent, seed=5000 + k,
                                      disable_pbar=True)
            images.append(out)
        return images

    def decode(samples) -> list:
        return [(vae.decode(s).reshape(-1, 64, 64, 3).clamp(0, 1).numpy() * 255).round()
                .astype(np.uint8) for s in samples]

    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    with torch.inference_mode():
        maps = {}
        for name in ("style", "negation"):
            exp = EXPERIMENTS[name]()
            start = time.perf_counter()
            cached = None if args.cache is None else args.cache / f"{name}.safetensors"
            if cached is not None and cached.is_file():
                maps[name] = load_maps(cached)
                continue
            maps[name] = learn.learn_maps(
                model, learn.encode_prompts(clip, exp.source),
                learn.encode_prompts(clip, exp.target), sites=exp.sites, support=exp.support,
                latent={"samples": torch.zeros(8, 4, 8, 8)})
            print(f"learned {name}: {len(maps[name])} maps in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                save_maps(cached, maps[name])
        style, dot = maps["style"], maps["negation"]
        heldout = EXPERIMENTS["style"]().heldout  # colour x shape combinations not fitted on
        dotted = [Scene(s.colour, s.shape, "plain", True) for s in heldout]

        def sliders(*pairs, **range_):
            return panel.patch_panel(model, [panel.Slider(m, 1.0, label, **range_)
                                             for label, m in pairs])

        both, conflicts = sliders(("style", style), ("dot", dot))
        result["conflicts"] = [c.message() for c in conflicts]
        runs = {"none": model, "style alone": apply.patch_model(model, style, 1.0),
                "dot alone": apply.patch_model(model, dot, 1.0), "both (panel)": both,
                "both, dot first (panel)": sliders(("dot", dot), ("style", style))[0]}
        chained = apply.patch_model(apply.patch_model(model, style, 1.0), dot, 1.0)
        composition, images = {}, {}
        for name, patched in runs.items():
            samples = sample(patched, dotted)
            if name == "both (panel)":
                chain = sample(chained, dotted)
                result["panel_equals_chained"] = all(torch.equal(a, b)
                                                     for a, b in zip(samples, chain))
            images[name] = decode(samples)
            composition[name] = _score(dotted, images[name])
            print(name, json.dumps(composition[name]), flush=True)
        result["composition"] = composition
        save_grid([[images[n][k][0] for n in runs] for k in range(len(dotted))],
                  [s.prompt for s in dotted], ROOT / "docs/images/sliders_composition_grid.png",
                  col_labels=list(runs))
        schedule, images = {}, {}
        for name, range_ in (("none", None), ("whole", {}),
                             ("first half", {"end_percent": 0.5}),
                             ("second half", {"start_percent": 0.5})):
            patched = model if range_ is None else sliders(("style", style), **range_)[0]
            images[name] = decode(sample(patched, heldout))
            schedule[name] = _score(heldout, images[name])
            if range_ is not None:
                schedule[name]["change"] = _where_changed(images["none"], images[name])
            print(name, json.dumps(schedule[name]), flush=True)
        result["schedule"] = schedule
        save_grid([[images[n][k][0] for n in images] for k in range(len(heldout))],
                  [s.prompt for s in heldout], ROOT / "docs/images/sliders_schedule_grid.png",
                  col_labels=list(images))
    out = ROOT / "benchmarks/results/toy_sliders.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
