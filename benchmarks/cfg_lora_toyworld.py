"""The CFG question on the toy world: nodes on the conditional half, on both halves, or a LoRA.

AcT Apply Transport transports the conditional half of the CFG batch by default; a LoRA exported
with AcT Export LoRA changes the weights, so both halves. For style (striped, linear_act on the
cross-attention outputs) and negation (no black dot, mean_act on the norms + cross-attention
outputs: linear_act's GroupNorm maps do not fold, mean_act's do), at cfg 1 and 5, with stock
KSampler (euler, 20 steps) on held-out prompts, through the real ComfyUI server:

- none: the plain model;
- nodes, conditional: AcT Apply Transport, λ = 1, apply_to conditional (the default);
- nodes, both: the same with apply_to both;
- LoRA: the exported file through the stock LoraLoaderModelOnly at strength 1.

Presence of the style / dot, colour and shape kept (evaluation.metrics), and the largest pixel
difference from the LoRA's images (8-bit levels)::

    nice -n 10 .venv/bin/python -m benchmarks.cfg_lora_toyworld --seeds 2 --out docs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from evaluation.act_eval import _graph, _score  # noqa: E402
from harness.comfy_server import ComfyServer  # noqa: E402
from toyworld.experiments import EXPERIMENTS, NEGATION_SITES, STYLE_SITES  # noqa: E402

SETUPS = {"style": ("linear_act", STYLE_SITES), "negation": ("mean_act", NEGATION_SITES)}
CONDITIONS = ("none", "nodes, conditional", "nodes, both", "LoRA")


STEPS = 20


def _base(exp, method: str, sites: str, seeds: int, cfg: float, apply_to: str = "conditional",
          strength: float = 1.0) -> dict:
    g = _graph(exp, strength, seeds, method=method, fit_batch=8, timestep_ranges=1,
               support="unbounded", incremental=True, base_seed=5000, sites=sites,
               apply_to=apply_to)
    for node in g.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["cfg"] = cfg
            node["inputs"]["steps"] = STEPS
    return g


def _export(server: ComfyServer, exp, method: str, sites: str, seeds: int) -> str:
    g = _base(exp, method, sites, seeds, 5.0)
    graph = {k: g[k] for k in ("ckpt", "fitlat", "learn")}
    graph["export"] = {"class_type": "ActExportLoRA", "inputs": {
        "model": ["ckpt", 0], "maps": ["learn", 0], "filename_prefix": f"cfg_{exp.name}"}}
    entry = server.run(graph, timeout=1800)
    text = " ".join(entry["outputs"]["export"]["text"])
    return re.search(r"models/loras/(\S+\.safetensors)", text).group(1)


def _graph_for(condition: str, exp, method, sites, seeds, cfg, lora: str) -> dict:
    if condition == "none":
        return _base(exp, method, sites, seeds, cfg, strength=0.0)
    if condition.startswith("nodes"):
        apply_to = "both" if condition.endswith("both") else "conditional"
        return _base(exp, method, sites, seeds, cfg, apply_to=apply_to)
    g = _base(exp, method, sites, seeds, cfg)
    g["apply"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["ckpt", 0], "lora_name": lora, "strength_model": 1.0}}
    return g


def run(server: ComfyServer, name: str, seeds: int, cfgs=(1.0, 5.0),
        prompts: int | None = None) -> list[dict]:
    exp = EXPERIMENTS[name]()
    if prompts:  # the first held-out prompts only (fitting is unchanged)
        exp = dataclasses.replace(exp, heldout=exp.heldout[:prompts])
    method, sites = SETUPS[name]
    lora = _export(server, exp, method, sites, seeds)
    rows = []
    for cfg in cfgs:
        images = {}
        for condition in CONDITIONS:
            g = _graph_for(condition, exp, method, sites, seeds, cfg, lora)
            entry = server.run(g, timeout=1800)
            images[condition] = [server.images(entry, node_id=f"save{k}")
                                 for k in range(len(exp.heldout))]
        for condition in CONDITIONS:
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max())
                       for pa, pb in zip(images[condition], images["LoRA"], strict=True)
                       for a, b in zip(pa, pb, strict=True))
            rows.append({"experiment": name, "method": method, "cfg": cfg,
                         "condition": condition, **_score(exp, images[condition]),
                         "max_diff_vs_lora": diff})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | cfg | applied as | presence | colour kept | shape kept | max diff vs LoRA |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        what = "striped" if r["experiment"] == "style" else "dot"
        lines.append(f"| {r['experiment']} ({what}, {r['method']}) | {r['cfg']:g} | "
                     f"{r['condition']} | {r['presence']:.2f} | {r['colour']:.2f} | "
                     f"{r['shape']:.2f} | {r['max_diff_vs_lora']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    global STEPS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--experiments", default="style,negation")
    ap.add_argument("--prompts", type=int, default=None, help="held-out prompts per task")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    STEPS = args.steps
    rows = []
    with ComfyServer() as server:
        for name in args.experiments.split(","):
            rows += run(server, name, args.seeds, prompts=args.prompts)
    print(table(rows))
    if args.out:
        (args.out / "results_cfg_lora.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
