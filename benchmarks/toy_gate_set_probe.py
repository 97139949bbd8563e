"""Does one gate decision per image for the whole map set help gated LinEAS maps? A probe.

Gated LinEAS maps on the toy world leave unrelated images less untouched than gated Linear-AcT
maps (docs/results_gate.md, "Gated LinEAS maps"). LinEAS learns its sites jointly, yet each
site's gate decides alone, so a map set may be applied in part. This probe learns the same maps
as ``benchmarks/toy_gate.py --method lineas --ramp strict`` and samples the held-out prompts
with every site following ONE site's decision, held for the run as AcT Apply Transport holds
each site's: ``first`` (the first site in forward order) or ``best`` (the site with the highest
training AUROC, earliest on ties; at the first step the sites before it still decide alone).

Not a product path: it swaps act_core's per-site gate states for a shared one from outside
(``TransportPlan.applied``). Run: ``python -m benchmarks.toy_gate_set_probe --decider best``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks import toy_gate


class _Follower:
    """A site's gate state that reads the decider's held gate and never stores its own."""

    def __init__(self, shared: dict) -> None:
        self.shared = shared

    def get(self, key, default=None):
        if key == "held":
            return self.shared.get("held")
        return False if key == "hold" else default


class _Shared:
    """The caller's per-call gate states, seen as one decision for every site."""

    def __init__(self, base: dict, decider: str) -> None:
        self.base, self.decider = base, decider

    def setdefault(self, site, default=None):
        shared = self.base.setdefault("_set", {"hold": True})
        return shared if site == self.decider else _Follower(shared)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="negation", choices=("negation", "style"))
    ap.add_argument("--decider", default="best", choices=("first", "best"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    from benchmarks.toy_methods import Toy
    from toyworld.experiments import EXPERIMENTS

    torch.set_num_threads(args.threads)
    toy = Toy()
    plan = sys.modules[f"{toy.pack.__name__}.act_core.apply"].TransportPlan
    exp, sets = EXPERIMENTS[args.experiment](), toy_gate.eval_sets(args.experiment)
    maps = toy_gate.learn_gated(toy, exp, "strict", "lineas")
    order = list(maps)
    decider = order[0] if args.decider == "first" else max(
        order, key=lambda s: (maps[s].gate.auroc, -order.index(s)))
    prompts = [s.prompt for s in sets["other"] + sets["source"]]
    cut = len(sets["other"]) * args.seeds
    plain = list(toy.sample(toy.model, prompts, args.seeds))
    original = plan.applied

    def applied(self, strength=1.0, gate_states=None):
        return original(self, strength,
                        None if gate_states is None else _Shared(gate_states, decider))

    plan.applied = applied
    try:
        model = toy.pack.nodes.apply.patch_model(toy.model, maps, 1.0, gate="learned")
        steered = list(toy.sample(model, prompts, args.seeds))
    finally:
        plan.applied = original
    result = {"experiment": args.experiment, "decider": args.decider, "site": decider,
              "site_index": order.index(decider), "site_auroc": maps[decider].gate.auroc,
              "sites": len(order), "other": toy_gate.change(plain[:cut], steered[:cut]),
              "presence_source": toy_gate.presence(exp, steered[cut:]),
              "presence_source_plain": toy_gate.presence(exp, plain[cut:])}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
