"""Toy world, in-process: maps learned at the learn node's defaults, on held-out prompts.

Learns with the pack's own learn function (as AcT Learn Transport runs it; the method and
its options as given, sites ``auto``), saves the maps, then samples the held-out prompts of
the experiment with the pack's own apply (``patch_model``, conditional half, support from the
maps) through ComfyUI's KSampler path (euler, 20 steps, cfg 5, 64x64) at several strengths and
reads every image with evaluation.metrics. The server protocol (evaluation/act_eval.py) in one
process, so that one learn serves every strength. Run:
``.venv/bin/python -m benchmarks.toy_lineas_eval --experiment style --method lineas``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from benchmarks.toy_lineas_cost import _pack  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="style", choices=("style", "negation"))
    ap.add_argument("--method", default="lineas")
    ap.add_argument("--sites", default="auto")
    ap.add_argument("--strengths", default="0,0.5,1")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None,
                    help="lineas steps (default: the node's, NODE_LINEAS)")
    args = ap.parse_args(argv)
    learn = _pack()
    apply = sys.modules["act_pack.nodes.apply"]
    import comfy.sample
    import comfy.sd
    import torch

    from act_core import save_maps
    from evaluation.metrics import read_image
    from toyworld.checkpoint import checkpoint_path
    from toyworld.experiments import EXPERIMENTS

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=True, output_clip=True)
    exp = EXPERIMENTS[args.experiment]()
    out = ROOT / "benchmarks" / "results"
    rows = []
    config = dataclasses.replace(learn.NODE_LINEAS, steps=args.steps or learn.NODE_LINEAS.steps)
    with torch.inference_mode():
        start = time.perf_counter()
        maps, report = learn.learn_and_diagnose(
            model, learn.encode_prompts(clip, exp.source), learn.encode_prompts(clip, exp.target),
            method=args.method, sites=args.sites, support=exp.support,
            latent={"samples": torch.zeros(1, 4, 8, 8)},
            lineas=config)
        learn_seconds = time.perf_counter() - start
        learn_cpu = time.process_time()
        print(report.text(limit=12), flush=True)
        tag = f"toy_{args.experiment}_{args.method}_{args.sites.replace(' ', '_')}"
        save_maps(out / f"{tag}.safetensors", maps)
        negative = learn.encode_prompts(clip, [""])[0]
        latent = torch.zeros(args.seeds, 4, 8, 8)
        for strength in [float(v) for v in args.strengths.split(",")]:
            patched = apply.patch_model(model, maps, strength)
            n = presence = colour = shape = 0
            for k, scene in enumerate(exp.heldout):
                positive = learn.encode_prompts(clip, [scene.prompt])[0]
                noise = comfy.sample.prepare_noise(latent, 5000 + k)
                samples = comfy.sample.sample(patched, noise, 20, 5.0, "euler", "normal",
                                              positive, negative, latent, seed=5000 + k,
                                              disable_pbar=True)
                for img in vae.decode(samples).reshape(-1, 64, 64, 3).numpy():
                    r = read_image(img)
                    n += 1
                    presence += (r.style == "striped") if exp.presence == "striped" else r.dot
                    colour += r.colour == scene.colour
                    shape += r.shape == scene.shape
            row = {"strength": strength, "presence": presence / n, "colour": colour / n,
                   "shape": shape / n, "images": n}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"args": vars(args), "lineas": vars(config), "learn_seconds": learn_seconds,
              "learn_cpu": learn_cpu, "rows": rows, "diagnosis": report.as_dict()}
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
