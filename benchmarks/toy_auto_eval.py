"""AcT Learn Transport's defaults (``sites = auto``, chosen by measurement) beside the presets.

In-process, with the pack's own ``learn_maps`` (the node's defaults: linear_act, incremental in
8 stages, 8 noise samples per prompt, first step, support unbounded) and ``patch_model``
(conditional half), on the split of ``evaluation.act_eval`` (held-out prompts), sampled with
ComfyUI's sampler (euler, 20 steps, cfg 5) through ``benchmarks/toy_methods.Toy``. For every
``--sites`` entry (``auto`` and/or preset names) it prints the learn time, auto's choice and
scores, and presence / colour kept / shape kept at every strength; ``--out`` saves JSON.
``--structure-only`` makes ``auto`` choose among the structure presets (block outputs, block
norms, both), as it does on every family without presets of its own: what such a model gets,
measured on the one trained checkpoint we have.

    .venv/bin/python -m benchmarks.toy_auto_eval --experiment style --strengths 0,1 \\
        --checkpoint /tmp/stage1/act_toyworld_sd15.safetensors --out /tmp/style_stage1.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.toy_methods import Toy, score
from toyworld.experiments import EXPERIMENTS


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="style")
    parser.add_argument("--sites", nargs="+", default=["auto"])
    parser.add_argument("--strengths", default="0,0.5,1")
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per held-out prompt")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: stage 2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--structure-only", action="store_true",
                        help="auto chooses among the structure presets, as on a model "
                             "without presets")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = EXPERIMENTS[args.experiment]()
    toy = Toy(args.checkpoint)
    if args.structure_only:  # the candidates a model without presets gets
        learn_auto = toy.pack.nodes.learn_auto
        learn_auto.candidate_names = lambda _model: list(learn_auto.STRUCTURE_PRESETS)
    prompts = [s.prompt for s in exp.heldout]
    rows = []
    for sites in args.sites:
        start = time.perf_counter()
        maps = toy.learn(exp.source, exp.target, support=exp.support, sites=sites)
        seconds = time.perf_counter() - start
        auto = maps.metadata["extra"].get("auto")
        print(f"{sites}: learned {len(maps)} maps in {seconds:.0f} s"
              + (f"; auto chose {auto['chosen']!r}, scores "
                 + ", ".join(f"{k} {v:.3f}" for k, v in auto["scores"].items()) if auto else ""),
              flush=True)
        for strength in [float(v) for v in args.strengths.split(",")]:
            model = toy.pack.nodes.apply.patch_model(toy.model, maps, strength)
            r = score(exp, toy.sample(model, prompts, args.seeds), args.seeds)
            rows.append({"sites": sites, "strength": strength, "learn_seconds": seconds,
                         "auto": auto, **r})
            print(f"  strength {strength:g}: {exp.presence} {r['presence']:.2f} colour "
                  f"{r['colour']:.2f} shape {r['shape']:.2f} ({r['images']} images)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"experiment": args.experiment,
                                        "checkpoint": str(args.checkpoint or "stage 2"),
                                        "seeds": args.seeds,
                                        "structure_only": args.structure_only,
                                        "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
