"""Measure AcT on the toy world through the real ComfyUI server and the pack's own nodes.

The two experiments of ``toyworld.experiments``, each fitted on some colour/shape
combinations and evaluated on the others (held out), with stock KSampler (euler, 20 steps,
cfg 5) at several seeds:
- style: source = plain prompts, target = the same with "striped"; evaluated on held-out plain
  prompts: striped presence, colour and shape kept, for every strength;
- negation: source = prompts " with a black dot", target = the same without; evaluated on
  held-out prompts that ask for the dot: dot presence, colour and shape kept.
``python -m evaluation.act_eval --out docs`` writes docs/results_toyworld.md, JSON and λ grids.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from harness.comfy_server import ComfyServer, add_sampling
from toyworld.experiments import CKPT, EXPERIMENTS, Experiment
from toyworld.render import STYLES

from .grids import save_grid
from .metrics import read_image

__all__ = ["STRENGTHS", "run_experiment", "strength_grid", "table"]

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _graph(exp: Experiment, strength: float, seeds: int, *, method: str, fit_batch: int,
           timestep_ranges: int, support: str | None, incremental: bool, base_seed: int,
           source: list[str] | None = None, target: list[str] | None = None,
           sites: str | None = None, pattern: str = "", collect_at: float = 0.0,
           apply_to: str = "conditional") -> dict:
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "fitlat": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 64, "height": 64, "batch_size": fit_batch}},
        "learn": {"class_type": "ActLearnTransport", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1],
            "source_prompts": "\n".join(source or exp.source),
            "target_prompts": "\n".join(target or exp.target),
            "sites": sites or exp.sites, "pattern": pattern, "method": method,
            "support": exp.support, "incremental": incremental, "stages": 8,
            "collect_at": collect_at, "timestep_ranges": timestep_ranges, "seed": 0,
            "latent": ["fitlat", 0]}},
        "apply": {"class_type": "ActApplyTransport", "inputs": {
            "model": ["ckpt", 0], "maps": ["learn", 0], "strength": strength,
            "start_percent": 0.0, "end_percent": 1.0, "apply_to": apply_to,
            "support": support or "from maps"}},
        "lat": {"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": seeds}},
    }
    for k, scene in enumerate(exp.heldout):
        g[f"pos{k}"] = {"class_type": "CLIPTextEncode",
                        "inputs": {"text": scene.prompt, "clip": ["ckpt", 1]}}
        add_sampling(g, str(k), model=["apply", 0], positive=[f"pos{k}", 0], seed=base_seed + k,
                     prefix=f"{exp.name}_{k}")
    return g


def _score(exp: Experiment, images_by_prompt: list[list]) -> dict:
    n = presence = colour = shape = 0
    for scene, images in zip(exp.heldout, images_by_prompt):
        for img in images:
            r = read_image(img)
            n += 1
            presence += (r.style == "striped") if exp.presence == "striped" else \
                (r.style == exp.presence) if exp.presence in STYLES else r.dot
            colour += r.colour == scene.colour
            shape += r.shape == scene.shape
    return {"images": n, "presence": presence / n, "colour": colour / n, "shape": shape / n}


def run_experiment(server: ComfyServer, exp: Experiment, strengths=STRENGTHS, seeds: int = 4, *,
                   method: str = "linear_act", fit_batch: int = 8, timestep_ranges: int = 1,
                   support: str | None = None, incremental: bool = True, base_seed: int = 5000,
                   source: list[str] | None = None, target: list[str] | None = None,
                   sites: str | None = None, pattern: str = "", collect_at: float = 0.0,
                   apply_to: str = "conditional"):
    """Run the experiment at every strength; returns (rows, images[strength][prompt])."""
    rows, images = [], {}
    for strength in strengths:
        graph = _graph(exp, strength, seeds, method=method, fit_batch=fit_batch,
                       timestep_ranges=timestep_ranges, support=support,
                       incremental=incremental, base_seed=base_seed, source=source,
                       target=target, sites=sites, pattern=pattern, collect_at=collect_at,
                       apply_to=apply_to)
        entry = server.run(graph, timeout=1800)
        per_prompt = [server.images(entry, node_id=f"save{k}") for k in range(len(exp.heldout))]
        images[strength] = per_prompt
        report = (entry.get("outputs", {}).get("learn", {}).get("text") or [""])[0]
        chose = next((line for line in report.splitlines() if "auto chose" in line), None)
        rows.append({"strength": strength, "method": method, **_score(exp, per_prompt),
                     **({"auto": chose} if chose else {})})
    return rows, images


def table(rows: list[dict], presence_label: str) -> str:
    lines = [f"| strength | {presence_label} | colour kept | shape kept | images |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strength']:g} | {r['presence']:.3f} | {r['colour']:.3f} | "
                     f"{r['shape']:.3f} | {r['images']} |")
    return "\n".join(lines) + "\n"


def strength_grid(exp: Experiment, images: dict, path: Path, prompts: int = 6) -> None:
    strengths = sorted(images)
    rows, labels = [], []
    for k, scene in enumerate(exp.heldout[:prompts]):
        rows.append([images[s][k][0] for s in strengths])
        labels.append(scene.prompt)
    save_grid(rows, labels, path, col_labels=[f"strength {s:g}" for s in strengths])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--experiments", default="style,negation")
    ap.add_argument("--strengths", default=",".join(f"{v:g}" for v in STRENGTHS),
                    help="comma-separated strengths (default: %(default)s)")
    ap.add_argument("--sites", default=None,
                    help="the learn node's site preset for every experiment (default: each "
                         "experiment's own; 'auto' = the node's default, chosen by measurement)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="another toy checkpoint (e.g. stage 1), served under the usual name")
    ap.add_argument("--tag", default="",
                    help="suffix of the result keys and grid names (keeps earlier results)")
    args = ap.parse_args(argv)
    results = {}
    with contextlib.ExitStack() as stack:
        base = None
        if args.checkpoint is not None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="act-eval-")))
            (base / "models" / "checkpoints").mkdir(parents=True)
            (base / "models" / "checkpoints" / CKPT).symlink_to(args.checkpoint.resolve())
        server = stack.enter_context(ComfyServer(base_dir=base))
        for name in args.experiments.split(","):
            exp = EXPERIMENTS[name]()
            strengths = [float(v) for v in args.strengths.split(",")]
            rows, images = run_experiment(server, exp, strengths, seeds=args.seeds,
                                          sites=args.sites)
            key = f"{name}{args.tag}"
            results[key] = {"rows": rows, "source": exp.source, "target": exp.target,
                            "heldout": [s.prompt for s in exp.heldout],
                            "sites": args.sites or exp.sites,
                            "checkpoint": str(args.checkpoint or CKPT)}
            strength_grid(exp, images, args.out / "images" / f"act_{key}_grid.png")
            print(f"## {key} (sites {args.sites or exp.sites})\n"
                  + table(rows, f"{exp.presence} presence"), flush=True)
    path = args.out / "results_toyworld.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**earlier, **results}, indent=2))  # keeps experiments not re-run


if __name__ == "__main__":
    main()
