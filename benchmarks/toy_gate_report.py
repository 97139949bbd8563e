"""What AcT Learn Transport's report says about its gates, on the toy world: the gates of the
negation and style maps (the experiments' site presets, the node's defaults, ``gate = learned``,
the strict ramp), fitted once on the real prompt sets and once with the source prompts as the
target too (nothing to tell apart); and gates fitted on two random samples of one
distribution. Per case: the median AUROC on the gates' training samples
and held out (:func:`act_core.gate.heldout_auroc`), and whether the report warns.

``python -m benchmarks.toy_gate_report`` (about 1.5 minutes on 2 CPU cores) writes
benchmarks/results/toy_gate_report.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/toy_gate_report.json")
    args = ap.parse_args(argv)
    import torch

    from act_core.info import gate_report
    from benchmarks.toy_methods import Toy
    from toyworld.experiments import EXPERIMENTS

    toy = Toy()
    rows = []
    for name in ("negation", "style"):
        exp = EXPERIMENTS[name]()
        for case, target in (("prompt sets as given", exp.target),
                             ("target = source", exp.source)):
            maps = toy.learn(exp.source, target, sites=exp.sites, support=exp.support,
                             gate="strict")
            gates = [tmap.gate for tmap in maps.values()]
            text, warnings = gate_report(maps)
            rows.append({
                "experiment": name, "case": case, "sites": len(gates),
                "auroc_training": float(torch.tensor([g.auroc for g in gates]).quantile(0.5)),
                "auroc_heldout": float(torch.tensor([g.heldout_auroc for g in gates])
                                       .quantile(0.5)),
                "warns": bool(warnings), "report": text})
            print(f"{name}, {case}: {text}" + "".join(f"\n  WARNING: {w}" for w in warnings),
                  flush=True)
    from act_core.gate import fit_gate

    gen = torch.Generator().manual_seed(0)  # why held out: noise alone, many units, few samples
    for units in (16, 320):
        source, target = (torch.randn(64, units, generator=gen) for _ in range(2))
        gate = fit_gate(source, target)
        rows.append({"experiment": "random", "case": f"one distribution, 64 + 64 samples of "
                     f"{units} units", "auroc_training": gate.auroc,
                     "auroc_heldout": gate.heldout_auroc})
        print(f"random, {rows[-1]['case']}: AUROC {gate.auroc:.2f} on the training samples, "
              f"{gate.heldout_auroc:.2f} held out")
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
