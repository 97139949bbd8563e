"""AcT Learn Text-Encoder Transport on the toy world: ``sites = auto`` against ``layer outputs``
(the node's default before auto), style and negation, held-out prompts.

Maps learned by the node's function (``learn_text_maps``: linear_act, support unbounded) on the
experiments' fitting prompts, applied at λ = 1 by AcT Apply Transport (CLIP)'s function to the
checkpoint's CLIP; the held-out prompts sampled as docs/results_toyworld.md does (ComfyUI's own
sampler, euler, 20 steps, cfg 5, 64x64, the noise of a KSampler with seed 5000 + prompt index,
``--seeds`` images per prompt); presence of the concept, colour and shape kept, read from the
images.

``python -m benchmarks.toy_text_auto`` (about 2.5 minutes on 2 CPU cores) writes
benchmarks/results/toy_text_auto.json and docs/images/text_auto_{style,negation}_grid.png
(the first image of the first 6 held-out prompts, one row per variant).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/toy_text_auto.json")
    args = ap.parse_args(argv)
    from benchmarks.toy_methods import Toy, score
    from evaluation.grids import save_grid
    from toyworld.experiments import EXPERIMENTS

    toy = Toy()
    clip_nodes, plain = toy.pack.nodes.clip, toy.clip
    results = {}
    for name in ("style", "negation"):
        exp = EXPERIMENTS[name]()
        prompts = [s.prompt for s in exp.heldout]
        images = {"unsteered": toy.sample(toy.model, prompts, args.seeds)}
        rows = {"unsteered": score(exp, images["unsteered"], args.seeds)}
        for sites in ("auto", "layer outputs"):
            maps = clip_nodes.learn_text_maps(plain, exp.source, exp.target, sites, "",
                                              "linear_act", "unbounded")
            auto = maps.metadata["extra"].get("auto")
            toy.clip, toy._cache = clip_nodes.patch_clip(plain, maps, 1.0), {}
            images[sites] = toy.sample(toy.model, prompts, args.seeds)
            rows[sites] = {**score(exp, images[sites], args.seeds),
                           **({"auto": auto} if auto else {})}
            toy.clip, toy._cache = plain, {}
            print(f"{name}, sites {sites}: {rows[sites]}", flush=True)
        print(f"{name}, unsteered: {rows['unsteered']}", flush=True)
        results[name] = {"presence_of": exp.presence, "rows": rows}
        chosen = rows["auto"]["auto"]["chosen"]
        labels = {"unsteered": "no maps", "layer outputs": "layer outputs (old default)",
                  "auto": f"auto ({chosen})"}
        save_grid([[images[v][k * args.seeds] for k in range(6)] for v in labels],
                  list(labels.values()), ROOT / f"docs/images/text_auto_{name}_grid.png",
                  col_labels=[s.prompt[:24] for s in exp.heldout[:6]])
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
