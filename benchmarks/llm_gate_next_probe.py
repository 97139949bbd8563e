"""Would a gate that reads the token BEFORE a toxic one separate? A dev probe for issue 23.

Half of SmolLM2's toxic continuations start from prompts the sequence gate calls benign, so a
gate that waits for a toxic token opens too late. A gate that opened one token earlier would
have to read "the next token is one the softened text lacks" from the residual stream. This
probe fits the sequence gate exactly as ``act fit --gate sequence`` does (shrinkage
discriminant, threshold just above every training target token, :func:`fit_sequence_gate`) on
the first half of the ``toxicity:paired`` pairs, for two labellings of the same source tokens:

* ``current``: a token is positive when its id is missing from the paired target (the gate of
  ``act fit --gate sequence``);
* ``next``: a position is positive when the NEXT token is such a token.

On the other half of the pairs it reports the token AUROC (positives against every target
position), the share of positives above the threshold, and the share of source and of target
texts in which any position passes (the gate would open). Fitting texts only, no generation.

    python -m benchmarks.llm_gate_next_probe --out benchmarks/results/llm_gate_next_probe.json
"""

from __future__ import annotations

import argparse
import logging

import torch

from act_core.gate import separation_auroc
from act_core.hf import data
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import fit_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")


def _labelled(source, target, positives, mode: str):
    """(source activations, their positives, target activations) per text; ``next`` labels
    position t by token t + 1 (so each text's last position has no label and is dropped)."""
    if mode == "current":
        return list(source), list(positives), list(target)
    return [a[:-1] for a in source], [p[1:] for p in positives], [t[:-1] for t in target]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", type=int, default=[2, 6, 12, 18, 24, 29])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target = data.load_builtin("toxicity:paired")
    half = len(source) // 2
    positives = _positives(tokenizer, source, target, 64)
    rows = []
    for layers in args.layers:
        site = reader_site(model, layers)
        src = _token_activations(model, tokenizer, source, Site.parse(site), 64)
        tgt = _token_activations(model, tokenizer, target, Site.parse(site), 64)
        for mode in ("current", "next"):
            s_acts, s_pos, t_acts = _labelled(src, tgt, positives, mode)
            gate = fit_sequence_gate(site, s_acts[:half], t_acts[:half], s_pos[:half])
            pos = torch.cat([gate.scores(a[m]) for a, m in zip(s_acts[half:], s_pos[half:],
                                                                 strict=True)])
            neg = torch.cat([gate.scores(t) for t in t_acts[half:]])
            opened = [bool((gate.scores(a) > 0).any()) for a in s_acts[half:]]
            opened_t = [bool((gate.scores(t) > 0).any()) for t in t_acts[half:]]
            rows.append({"layers": layers, "mode": mode, "test_auroc": separation_auroc(pos, neg),
                         "positives_on": float((pos > 0).float().mean()),
                         "source_texts_on": sum(opened) / len(opened),
                         "target_texts_on": sum(opened_t) / len(opened_t),
                         "positives": int(pos.numel()), "negatives": int(neg.numel())})
            log.info("%s", rows[-1])
    print("| layers | label | test AUROC | positives on | source texts on | target texts on |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['mode']} | {r['test_auroc']:.3f} | {r['positives_on']:.2f} "
              f"| {r['source_texts_on']:.2f} | {r['target_texts_on']:.2f} |")
    if args.out:
        save_json(args.out, {"args": vars(args), "rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
