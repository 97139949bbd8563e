"""What ``act fit --sites auto`` chooses on SmolLM2-135M-Instruct for the built-in data, against
the configurations docs/llm.md chose on dev by toxicity, concept rate and perplexity.

For each data set: the candidates' held-out scores (:mod:`act_core.hf.auto`; fitting texts only,
no generation, no dev or eval prefixes), at the support the docs/llm.md protocol applies that
kind of map with (toxicity q0.05-0.95, concepts unbounded), maps fitted all at once.

``ACT_CACHE_DIR=/tmp/act_cache python -m benchmarks.llm_auto_sites`` (about 75 s on 2 CPU
cores) writes benchmarks/results/llm_auto_sites.json. ``--likelihood`` adds, per candidate, a
score that looks at the next words instead (not used by ``auto``; measured to compare): the
change of the mean token NLL of the held-out source and target texts under the candidate's maps
(strength 1, the same support), and their difference (source up, target down = more
target-like), for ``llm_auto_sites_likelihood.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: data set -> (support, the configuration docs/llm.md chose on dev)
DATA = {
    "toxicity:paired": ("q0.05-0.95", "post_norms + mlp_out + attn_out"),
    "toxicity": ("q0.05-0.95", "attn_out (the first dev choice, 2026-11-21)"),
    "concept:football": ("unbounded", "attn_out"),
    "concept:space": ("unbounded", "attn_out"),
    "concept:computers": ("unbounded", "attn_out"),
    "concept:medicine": ("unbounded", "attn_out"),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=list(DATA))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/llm_auto_sites.json")
    ap.add_argument("--likelihood", action="store_true")
    args = ap.parse_args(argv)
    from act_core.hf import data, load_causal_lm
    from act_core.hf.auto import choose_lm_sites

    model, tokenizer = load_causal_lm("smollm2")
    rows = []
    for name in args.data:
        support, dev_choice = DATA[name]
        source, target = data.load_builtin(name)
        start = time.perf_counter()
        _, selection = choose_lm_sites(model, tokenizer, source, target, support=support)
        rows.append({"data": name, "support": support, "dev_choice": dev_choice,
                     "seconds": round(time.perf_counter() - start, 1),
                     **selection.as_dict(), "warnings": list(selection.warnings)})
        if args.likelihood:
            rows[-1]["likelihood"] = likelihood(model, tokenizer, source, target, support)
            print(json.dumps(rows[-1]["likelihood"], indent=1), flush=True)
        print(f"{name} ({support}; dev chose {dev_choice}):\n{selection.text()}", flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


def likelihood(model, tokenizer, source, target, support: str) -> dict:
    """Per candidate: the change of the held-out source and target texts' mean token NLL
    (nats) under its maps, fitted as ``auto`` fits them, and source change - target change."""
    import math

    from act_core.hf import fit_lm, lm_sites
    from act_core.hf.auto import CANDIDATES, MOST_HELD
    from act_core.hf.generate import perplexity
    from act_core.selection import heldout_split

    fit_s, held_s = heldout_split(len(source), most=MOST_HELD)
    fit_t, held_t = heldout_split(len(target), most=MOST_HELD)
    presets = list(dict.fromkeys(p for group in CANDIDATES.values() for p in group))
    maps = fit_lm(model, tokenizer, [source[i] for i in fit_s], [target[i] for i in fit_t],
                  presets, incremental=False)
    held = {"source": [source[i] for i in held_s], "target": [target[i] for i in held_t]}

    def nll(texts, applied):
        return math.log(perplexity(model, tokenizer, texts, applied, 1.0, support))

    base = {side: nll(texts, None) for side, texts in held.items()}
    out = {"unsteered_nll": base}
    for name, group in CANDIDATES.items():
        names = {str(site) for site in lm_sites(model, list(group))}
        chosen = {site: tmap for site, tmap in maps.items() if site in names}
        change = {side: nll(texts, chosen) - base[side] for side, texts in held.items()}
        out[name] = {**change, "contrast": change["source"] - change["target"]}
    return out


if __name__ == "__main__":
    main()
