"""Gated maps on the toy world, through the real ComfyUI server and the pack's own nodes.

Protocol of docs/results_toyworld.md (maps fitted on half of the colour x shape combinations,
evaluated on held-out prompts; stock KSampler euler, 20 steps, cfg 5, 64x64, seeds 5000 + prompt
index, a batch of ``--seeds``). One AcT Learn Transport with ``gate = learned``; the same maps
applied at λ = 1 by AcT Apply Transport with ``gate = learned`` and with ``gate = off`` (the
ungated map), against the plain model (λ = 0) on the same seeds:

* prompts that are NOT like the source (negation: held-out prompts without the dot; style:
  held-out prompts that already ask for a style): mean absolute pixel change against λ = 0, in
  8-bit levels, and the fraction of images whose mean change is within one level (and whose
  every pixel is);
* prompts like the source (negation: held-out prompts that ask for the dot; style: held-out
  plain prompts): presence of the concept at λ = 1 (dot should go, stripes should come).

``python benchmarks/toy_gate.py --out docs`` writes docs/results_gate.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toyworld.act_eval import (  # noqa: E402
    CKPT,
    EXPERIMENTS,
    heldout_combos,
)
from toyworld.comfy_server import ComfyServer  # noqa: E402
from toyworld.metrics import read_image  # noqa: E402
from toyworld.render import STYLES, Scene  # noqa: E402

VARIANTS = ("plain", "gated", "ungated")


def eval_sets(name: str) -> dict[str, list[Scene]]:
    """``{"other": prompts unlike the source, "source": prompts like it}``, all held out."""
    held = heldout_combos()
    if name == "negation":
        return {"other": [Scene(c, s, st, False) for st in STYLES for c, s in held],
                "source": [Scene(c, s, st, True) for st in STYLES for c, s in held]}
    return {"other": [Scene(c, s, st) for st in ("striped", "outlined") for c, s in held],
            "source": [Scene(c, s) for c, s in held]}


def graph(exp, scenes: list[Scene], seeds: int, base_seed: int = 5000) -> dict:
    """Learn once (gated), then sample every scene with the plain, gated and ungated model."""
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "fitlat": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 64, "height": 64, "batch_size": 8}},
        "learn": {"class_type": "ActLearnTransport", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1],
            "source_prompts": "\n".join(exp.source), "target_prompts": "\n".join(exp.target),
            "sites": exp.sites, "pattern": "", "method": "linear_act",
            "support": exp.support, "incremental": True, "stages": 8, "collect_at": 0.0,
            "timestep_ranges": 1, "seed": 0, "latent": ["fitlat", 0], "gate": "learned"}},
        "lat": {"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": seeds}},
    }
    models = {"plain": ["ckpt", 0]}
    for variant, gate in (("gated", "learned"), ("ungated", "off")):
        g[f"apply_{variant}"] = {"class_type": "ActApplyTransport", "inputs": {
            "model": ["ckpt", 0], "maps": ["learn", 0], "strength": 1.0,
            "start_percent": 0.0, "end_percent": 1.0, "apply_to": "conditional",
            "support": "from maps", "gate": gate}}
        models[variant] = [f"apply_{variant}", 0]
    for k, scene in enumerate(scenes):
        g[f"pos{k}"] = {"class_type": "CLIPTextEncode",
                        "inputs": {"text": scene.prompt, "clip": ["ckpt", 1]}}
        for variant, model in models.items():
            g[f"ks_{variant}_{k}"] = {"class_type": "KSampler", "inputs": {
                "model": model, "positive": [f"pos{k}", 0], "negative": ["neg", 0],
                "latent_image": ["lat", 0], "seed": base_seed + k, "steps": 20, "cfg": 5.0,
                "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
            g[f"dec_{variant}_{k}"] = {"class_type": "VAEDecode", "inputs": {
                "samples": [f"ks_{variant}_{k}", 0], "vae": ["ckpt", 2]}}
            g[f"save_{variant}_{k}"] = {"class_type": "SaveImage", "inputs": {
                "images": [f"dec_{variant}_{k}", 0], "filename_prefix": f"gate_{variant}_{k}"}}
    return g


def change(plain: list[np.ndarray], steered: list[np.ndarray]) -> dict:
    """Mean |difference| in 8-bit levels, and the fractions of images within one level."""
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(plain, steered)]
    means = np.array([float(d.mean()) for d in diffs])
    return {"mean_abs_change": float(means.mean()),
            "within_one_level_mean": float((means <= 1.0).mean()),
            "within_one_level_every_pixel": float(np.mean([int(d.max()) <= 1 for d in diffs])),
            "images": len(diffs)}


def presence(exp, scenes: list[Scene], images: list[list[np.ndarray]]) -> float:
    hits = n = 0
    for _scene, batch in zip(scenes, images):
        for img in batch:
            r = read_image(img)
            hits += r.dot if exp.presence == "dot" else r.style == exp.presence
            n += 1
    return hits / max(1, n)


def run(server: ComfyServer, name: str, seeds: int) -> dict:
    exp = EXPERIMENTS[name]()
    sets = eval_sets(name)
    scenes = sets["other"] + sets["source"]
    start = time.time()
    entry = server.run(graph(exp, scenes, seeds), timeout=3600)
    images = {v: [server.images(entry, node_id=f"save_{v}_{k}") for k in range(len(scenes))]
              for v in VARIANTS}
    n_other = len(sets["other"])
    result = {"seconds": round(time.time() - start, 1),
              "other_prompts": [s.prompt for s in sets["other"]],
              "source_prompts": [s.prompt for s in sets["source"]]}
    for variant in ("gated", "ungated"):
        flat = lambda v, part: [img for batch in (images[v][:n_other] if part == "other"  # noqa: E731
                                                  else images[v][n_other:]) for img in batch]
        result[variant] = {"other": change(flat("plain", "other"), flat(variant, "other")),
                           "source": change(flat("plain", "source"), flat(variant, "source")),
                           "presence_source": presence(exp, sets["source"],
                                                       images[variant][n_other:])}
    result["plain"] = {"presence_source": presence(exp, sets["source"], images["plain"][n_other:]),
                       "presence_other": presence(exp, sets["other"], images["plain"][:n_other])}
    result["gated"]["presence_other"] = presence(exp, sets["other"], images["gated"][:n_other])
    result["ungated"]["presence_other"] = presence(exp, sets["other"],
                                                   images["ungated"][:n_other])
    return result


def table(results: dict) -> str:
    lines = ["| map | prompts unlike the source: mean abs change (levels) | within one level "
             "(mean / every pixel) | prompts like the source: presence at λ = 1 (λ = 0) |",
             "|---|---|---|---|"]
    for name, r in results.items():
        for variant in ("ungated", "gated"):
            o = r[variant]["other"]
            lines.append(f"| {name}, {variant} | {o['mean_abs_change']:.2f} | "
                         f"{o['within_one_level_mean']:.2f} / "
                         f"{o['within_one_level_every_pixel']:.2f} ({o['images']} images) | "
                         f"{r[variant]['presence_source']:.2f} "
                         f"({r['plain']['presence_source']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--experiments", default="negation,style")
    args = ap.parse_args(argv)
    results = {}
    with ComfyServer() as server:
        for name in args.experiments.split(","):
            results[name] = run(server, name, args.seeds)
            print(f"{name}: {json.dumps({k: results[name][k] for k in VARIANTS})}", flush=True)
    path = args.out / "results_gate.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**earlier, **results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
