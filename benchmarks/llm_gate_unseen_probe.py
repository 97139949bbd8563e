"""Does the sequence gate's probe know offensive words it was not fitted on? A probe for issue 23.

On eval the look-ahead gate read as toxic 45% of the toxic unsteered continuations, against
93% on dev. The probe's positives are the tokens of ``toxicity:paired``'s source texts that the
paired softened text lacks (178 tokens in 86 pairs): it may learn those words rather than
"offensive". This splits the pairs in two halves, fits the gate on one (exactly as ``act fit
--gate sequence``: :func:`fit_sequence_gate`, strict threshold) and scores the other, both
ways round, per reader depth:

* the held-out positives whose token id is among the fitting half's positives ("seen words")
  and those whose id is not ("unseen words"): the share above the threshold;
* the held-out softened texts in which some token passes.

Fitting texts only, no generation, about a minute:

    python -m benchmarks.llm_gate_unseen_probe --out benchmarks/results/llm_gate_unseen_probe.json
"""

from __future__ import annotations

import argparse
import logging

import torch

from act_core.hf import data
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import fit_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8, 12, 18])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target = data.load_builtin("toxicity:paired")
    positives = _positives(tokenizer, source, target, 64)
    ids = [torch.tensor(tokenizer([s], truncation=True, max_length=64)["input_ids"][0][1:])
           for s in source]
    half = len(source) // 2
    halves = [list(range(half)), list(range(half, len(source)))]
    rows = []
    for layers in args.layers:
        site = reader_site(model, layers)
        src = _token_activations(model, tokenizer, source, Site.parse(site), 64)
        tgt = _token_activations(model, tokenizer, target, Site.parse(site), 64)
        counts = dict.fromkeys(("seen_on", "seen", "unseen_on", "unseen", "target_on",
                                "targets"), 0)
        for fit, held in (halves, halves[::-1]):
            gate = fit_sequence_gate(site, [src[i] for i in fit], [tgt[i] for i in fit],
                                     [positives[i] for i in fit])
            words = set(torch.cat([ids[i][positives[i]] for i in fit]).tolist())
            for i in held:
                on = gate.scores(src[i]) > 0  # (T,)
                new = torch.tensor([t not in words for t in ids[i].tolist()], dtype=torch.bool)
                unseen, seen = positives[i] & new, positives[i] & ~new
                counts["seen_on"] += int((on & seen).sum())
                counts["seen"] += int(seen.sum())
                counts["unseen_on"] += int((on & unseen).sum())
                counts["unseen"] += int(unseen.sum())
                counts["target_on"] += int(bool((gate.scores(tgt[i]) > 0).any()))
                counts["targets"] += 1
        rows.append({"layers": layers, **counts})
        log.info("%s", rows[-1])
    print("| reader after | seen words above threshold | unseen words above threshold | "
          "held-out softened texts on |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['seen_on']}/{r['seen']} ({r['seen_on'] / r['seen']:.2f}) "
              f"| {r['unseen_on']}/{r['unseen']} ({r['unseen_on'] / r['unseen']:.2f}) "
              f"| {r['target_on']}/{r['targets']} |")
    result = {"rows": rows}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
