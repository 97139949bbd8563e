"""Probe one negation (or style) recipe on the toy world: learn once, then apply it several ways.

In-process, with the same functions and split as ``toy_methods.py`` (``learn_maps`` and
``patch_model`` of the pack, 18 held-out dot prompts x ``--seeds`` seeds, ComfyUI's sampler,
euler, 20 steps, cfg 5). Prints presence / colour kept / shape kept for every apply setting.
``--experiment style`` probes the plain -> striped maps on the 6 held-out plain prompts instead.

Example (the time-steered trajectory maps applied whole, over the first half only, and over
the second half only)::

    .venv/bin/python -m benchmarks.toy_negation_probe \\
        --learn '{"timestep_ranges": 4, "collect": "trajectory", "stages": 1}' \\
        --apply '{"strength": 1}' '{"strength": 1, "end_percent": 0.5}' \\
                '{"strength": 1, "start_percent": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.toy_methods import CFG, Toy, score
from toyworld.experiments import EXPERIMENTS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn", default="{}", help="learn_maps options, as JSON "
                        "(support defaults to the experiment's, unbounded)")
    parser.add_argument("--apply", nargs="+", default=['{"strength": 1}'],
                        help="patch_model settings, one JSON object each (strength required; "
                        "\"cfg\" changes the sampler's guidance scale, default 5)")
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="negation")
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per held-out prompt")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = EXPERIMENTS[args.experiment]()
    options = {"support": exp.support, **json.loads(args.learn)}
    toy = Toy()
    start = time.perf_counter()
    maps = toy.learn(exp.source, exp.target, **options)
    print(f"learn {options}: {time.perf_counter() - start:.0f} s", flush=True)
    prompts = [s.prompt for s in exp.heldout]
    for setting in args.apply:
        kwargs = json.loads(setting)
        strength = kwargs.pop("strength")
        cfg = kwargs.pop("cfg", CFG)
        model = toy.pack.nodes.apply.patch_model(toy.model, maps, strength, **kwargs)
        r = score(exp, toy.sample(model, prompts, args.seeds, cfg), args.seeds)
        print(f"strength {strength:g} cfg {cfg:g} {kwargs}: {exp.presence} {r['presence']:.2f} "
              f"colour {r['colour']:.2f} shape {r['shape']:.2f}", flush=True)


if __name__ == "__main__":
    main()
