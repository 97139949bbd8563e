"""Does AcT Learn Transport's ``auto`` need its held-out prompts to be parallel lists?

``sites = auto`` compares each held-out source prompt's steered final latent with the held-out
target prompts' (``nodes/learn_auto.py``). With as many held-out prompts on both sides it
compares them as pairs (row i with row i: same noise, and in parallel lists the same scene),
otherwise as samples (per element, sorted values). Pairs are exact for parallel lists, such as
the toy world's ("a red circle" / "a striped red circle"); for two unrelated lists of one
length they compare different scenes, which could reward maps that pull every image towards
the target images' mean. This runs the node's measurement on the toy experiments with the
target list as given (parallel) and rotated by half its length (the same prompts, unrelated
rows), scores every preset both ways from the same sampled latents, and prints each choice.
The learn stops after the measurement (no final learn, no images).

    .venv/bin/python -m benchmarks.toy_auto_pairing --out benchmarks/results/toy_auto_pairing.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.toy_methods import Toy
from toyworld.experiments import EXPERIMENTS


class _Measured(Exception):
    """Raised once both selections are known: the learn stops there."""


def measure(toy: Toy, source: list[str], target: list[str], support: str) -> dict:
    learn_auto = toy.pack.nodes.learn_auto
    original = learn_auto.score_candidates
    found = {}

    def both(candidates, maps, outputs, reference, heldout, paired, label="auto"):
        cache: dict = {}

        def once(chosen):  # every candidate sampled once, scored both ways
            key = tuple(sorted(chosen))
            if key not in cache:
                cache[key] = outputs(chosen)
            return cache[key]

        for mode in (True, False):
            found["pairs" if mode else "samples"] = original(
                candidates, maps, once, reference, heldout, mode, label).as_dict()
        raise _Measured

    learn_auto.score_candidates = both
    try:
        toy.learn(source, target, support=support, sites="auto")
    except _Measured:
        pass
    finally:
        learn_auto.score_candidates = original
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["style", "negation"])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: stage 2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    toy = Toy(args.checkpoint)
    results = {}
    for name in args.experiments:
        exp = EXPERIMENTS[name]()
        half = len(exp.target) // 2
        for order, target in (("parallel", exp.target),
                              ("rotated", exp.target[half:] + exp.target[:half])):
            found = measure(toy, exp.source, target, exp.support)
            results[f"{name}/{order}"] = found
            for mode, sel in found.items():
                scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(sel["scores"].items(),
                                                                     key=lambda kv: kv[1]))
                print(f"{name:9s} {order:9s} as {mode:8s}: chose {sel['chosen']!r}  ({scores})",
                      flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
