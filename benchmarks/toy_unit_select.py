"""Unit selection on the toy world's maps: fewer units moved, how much less collateral change?

Issue 23 asks a map to leave images without the concept alone; the learned gate does that, but
a gated map cannot be folded or exported as a LoRA. Unit selection (``unit_z``:
:func:`act_core.units.keep_units`, a unit keeps its map only where the Welch statistic of the
source-target mean difference exceeds the threshold) keeps the map input-independent. This
measures, with :mod:`benchmarks.toy_gate`'s protocol in-process (held-out prompts, AcT Learn
Transport's function on the experiment's site preset, AcT Apply Transport's at λ = 1 with
``gate = off``, against the plain model on the same noise): per threshold, the units kept, the
mean absolute pixel change on prompts unlike the source, and the concept's presence on prompts
like it.

    python -m benchmarks.toy_unit_select negation --thresholds 0 2 3 \\
        --out benchmarks/results/toy_unit_select_negation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.toy_gate import change, eval_sets, presence
from toyworld.experiments import EXPERIMENTS


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=("negation", "style"))
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 2.0, 3.0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    from benchmarks.toy_methods import Toy

    torch.set_num_threads(args.threads)
    toy, exp = Toy(), EXPERIMENTS[args.experiment]()
    sets = eval_sets(args.experiment)
    prompts = [s.prompt for s in sets["other"] + sets["source"]]
    cut = len(sets["other"]) * args.seeds
    start = time.perf_counter()
    plain = list(toy.sample(toy.model, prompts, args.seeds))
    result = {"experiment": args.experiment, "seeds": args.seeds, "prompts": len(prompts),
              "plain": {"presence_source": presence(exp, plain[cut:]),
                        "presence_other": presence(exp, plain[:cut])},
              "sample_seconds_plain": round(time.perf_counter() - start, 1), "rows": []}
    for z in args.thresholds:
        maps = toy.learn(exp.source, exp.target, sites=exp.sites, support=exp.support,
                         unit_z=z)
        kept = sum(int(m.moved_units.sum()) for m in maps.values())
        model = toy.pack.nodes.apply.patch_model(toy.model, maps, 1.0, gate="off")
        images = list(toy.sample(model, prompts, args.seeds))
        result["rows"].append({"unit_z": z, "units_kept": kept,
                               "units": sum(m.scale.numel() for m in maps.values()),
                               "other": change(plain[:cut], images[:cut]),
                               "presence_source": presence(exp, images[cut:]),
                               "presence_other": presence(exp, images[:cut])})
        print(json.dumps(result["rows"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
