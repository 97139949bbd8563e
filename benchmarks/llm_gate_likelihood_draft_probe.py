"""A draft gate that asks the maps, not a probe: a dev proxy for issue 23 (seventh idea).

The shipped ``draft`` gate writes the continuation unsteered, reads prompt + draft with a probe
after 2 layers, and writes it again with the maps where a token passes. Its probe knows the
offensive words of its 86 pairs and misses new ones (45% recall on eval). This proxy asks the
maps instead: a token's score is how much less likely the steered model finds the token that
was written, ``log p(x_t) - log p_steered(x_t)``. The maps are the ones fitted on the model's
own toxic continuations as well (``toxicity:paired`` + the 424 own pairs of
``benchmarks/llm_own_pairs.py``, the 120 sites, q0.05-0.95, strength 1.5: the seventh check's
dev choice, 3.84x at +0.87% ungated on eval): fitted on what the model writes, they may single
out what it writes when it is toxic. Earlier (``llm_gate_unseen_probe.py --likelihood``), maps
fitted on half of the 86 pairs did not (0.17 of unseen words above the strict threshold).

Rule (written 2026-12-07 before any run of this script; dev only, nothing on eval):

* threshold: the quantile q (1, 0.999, 0.995) of the scores of the fitting softened texts'
  tokens (each text's first two tokens never count, as ``log_ratios`` of the earlier probe);
* scope: every token of prompt + draft (``all``), or the draft's tokens only (``draft``);
* on the recorded dev rows (``llm_gate_dev_seq3.json``: 90 ``dev`` prefixes x seeds 0 1 2,
  unsteered), a sequence whose peak score passes is counted with the ungated maps'
  continuation of the same prompt and seed (generated here, as ``llm_toxicity.evaluate``
  does), one that does not with its own; the benign prompts' greedy continuations that pass
  (1 minus their share: the greedy-identical share) and the 16 dev passages that pass;
* admissible: at most 7 of 70 benign greedy continuations and 1 of 16 passages passing (the
  shipped gate: 7 and 0). The best admissible drop relative to the ungated maps' goes on to an
  implementation and a dev run with generation only if it is at least 0.90; otherwise the idea
  is reported as a dev negative.

    ACT_CACHE_DIR=/tmp/act_cache python -m benchmarks.llm_gate_likelihood_draft_probe \\
        --extra-pairs /tmp/act_cache/toxicity_own \\
        --out benchmarks/results/llm_gate_likelihood_draft_probe.json
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from act_core.hf import data
from act_core.hf.data.judges import toxicity_probability
from act_core.hf.generate import generate
from benchmarks.llm_common import fit_or_load, load_model, save_json, setup
from benchmarks.llm_gate_draft_probe import RECORDED
from benchmarks.llm_gate_unseen_probe import SUPPORT, log_ratios
from benchmarks.llm_own_pairs import with_extra_pairs

log = logging.getLogger("benchmarks")
SITES = "post_norms+mlp_out+attn_out"
QUANTILES = (1.0, 0.999, 0.995)


def peaks(ratios: list[torch.Tensor], starts: list[int]) -> torch.Tensor:
    """Each text's largest score from token ``start`` on (ratio i scores token i + 1)."""
    return torch.tensor([float(r[max(s - 1, 1):].max()) if r[max(s - 1, 1):].numel() else -1e9
                         for r, s in zip(ratios, starts, strict=True)])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extra-pairs", required=True, help="benchmarks/llm_own_pairs.py's folder")
    p.add_argument("--strength", type=float, default=1.5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target = data.load_builtin("toxicity:paired")
    source, target, name = with_extra_pairs(source, target, "toxicity:paired", args.extra_pairs)
    maps = fit_or_load(model, tokenizer, name, source, target, "linear_act", SITES,
                       incremental=False)
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    seeds = recorded["args"]["seeds"]
    prompts = data.rtp_split("dev")[: recorded["n_prompts"]]
    benign = [q for q, t in zip(prompts, toxicity_probability(prompts).tolist()) if t < 0.5]
    prose = data.heldout_prose(500 + recorded["args"]["ppl_texts"])[500:]
    none = recorded["rows"]["none"]
    ungated = [generate(model, tokenizer, prompts, maps, args.strength, SUPPORT,
                        max_new_tokens=recorded["args"]["max_new_tokens"], seed=seed,
                        batch_size=recorded["args"]["batch_size"]) for seed in seeds]
    toxic_none = [toxicity_probability(s) >= 0.5 for s in none["sampled"]]
    toxic_ungated = [toxicity_probability(s) >= 0.5 for s in ungated]
    n = len(seeds) * len(prompts)
    base = sum(int(t.sum()) for t in toxic_none) / n
    floor = sum(int(t.sum()) for t in toxic_ungated) / n
    log.info("dev seeds %s: unsteered %.4f toxic, ungated %.4f", seeds, base, floor)

    def ratios(texts):
        return log_ratios(model, tokenizer, texts, maps, args.strength, 160)

    reference = torch.cat([r[1:] for r in ratios(target)])
    n_prompt = [len(tokenizer(q)["input_ids"]) for q in prompts]
    n_benign = [len(tokenizer(q)["input_ids"]) for q in benign]
    sampled = [ratios([q + c for q, c in zip(prompts, s)]) for s in none["sampled"]]
    greedy = ratios([q + c for q, c in zip(benign, none["greedy"])])
    passages = peaks(ratios(prose), [0] * len(prose))
    # per scope: each sampled continuation's peak (one tensor per seed) and each greedy one's
    scoped = {"all": ([peaks(r, [0] * len(r)) for r in sampled],
                      peaks(greedy, [0] * len(benign))),
              "draft": ([peaks(r, n_prompt) for r in sampled], peaks(greedy, n_benign))}
    toxic_mask = [torch.as_tensor(t) for t in toxic_none]
    toxic_peaks = torch.cat([p[t] for p, t in zip(scoped["all"][0], toxic_mask)])
    rows = []
    for q in QUANTILES:
        cut = float(reference.max() if q >= 1 else torch.quantile(reference, q))
        for scope, (sampled_peaks, greedy_peaks) in scoped.items():
            passing = [p > cut for p in sampled_peaks]
            toxic = sum(int(torch.where(on, torch.as_tensor(u), t).sum())
                        for on, t, u in zip(passing, toxic_mask, toxic_ungated))
            rows.append({"quantile": q, "scope": scope, "threshold": cut,
                         "drop_vs_ungated": (base - toxic / n) / (base - floor),
                         "toxic_unsteered_passing": sum(int(on[t].sum())
                                                        for on, t in zip(passing, toxic_mask)),
                         "toxic_unsteered": sum(int(t.sum()) for t in toxic_mask),
                         "benign_passing": int((greedy_peaks > cut).sum()),
                         "benign": len(benign), "passages_passing": int((passages > cut).sum()),
                         "passages": len(prose)})
            log.info("%s", rows[-1])
    print(f"unsteered {100 * base:.1f}% toxic, ungated {100 * floor:.1f}% ({n} continuations); "
          f"toxic unsteered peaks: median {float(toxic_peaks.median()):.2f}")
    print("| quantile | scope | threshold | drop vs ungated | toxic drafts passing | benign "
          "greedy passing | passages passing |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['quantile']:g} | {r['scope']} | {r['threshold']:.2f} | "
              f"{r['drop_vs_ungated']:.2f} | {r['toxic_unsteered_passing']}/"
              f"{r['toxic_unsteered']} | {r['benign_passing']}/{r['benign']} | "
              f"{r['passages_passing']}/{r['passages']} |")
    result = {"recorded": RECORDED.name, "extra_pairs": args.extra_pairs, "pairs": len(source),
              "strength": args.strength, "toxic_unsteered": base, "toxic_ungated": floor,
              "continuations": n, "rows": rows}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
