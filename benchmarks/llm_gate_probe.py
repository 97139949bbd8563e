"""How well a sequence gate (act_core.seqgate) separates, before any steered generation.

For each reader depth (the residual stream after k decoder layers of SmolLM2-135M-Instruct) it
fits the gate exactly as ``act fit --gate sequence`` does, on ``toxicity:paired``, and reports:

* held-out AUROC on the paired texts (2-fold over the pairs, the gate's pooled max score);
* on the 90 ``dev`` prefixes (never ``eval``): the share whose gate is on at the end of the
  prompt, for prompts the classifier calls benign, prompts it calls toxic, and prompts whose
  unsteered continuation (32 sampled tokens, seeds 0 and 1) it calls toxic; and the dev AUROC
  of the pooled score against those two labels;
* the share of the 16 development prose passages (book cloze 500-515) the gate switches on;
* with ``--quantiles`` (the threshold at that quantile of the target tokens' scores, 1: their
  maximum), per depth x quantile also the share of benign dev prompts whose gate is on over
  prompt + unsteered *greedy* continuation: where it stays off the gated greedy continuation is
  the unsteered one, token for token, so one minus this share bounds the "greedy identical"
  criterion from below (the proxies of the dev rule in ``benchmarks/llm_gate.py``).

The unsteered dev continuations are generated once and cached (``--cache``)::

    python -m benchmarks.llm_gate_probe --out benchmarks/results/llm_gate_probe.json
    python -m benchmarks.llm_gate_probe --layers 2 4 6 --quantiles 1 0.999 0.995 0.99 0.98 \
        --out benchmarks/results/llm_gate_probe_quantiles.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from act_core import hf
from act_core.gate import separation_auroc as _auroc
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import fit_sequence_gate
from act_core.sites import Site

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("llm_gate_probe")


def _benign(labels: dict) -> list[str]:
    """The dev prompts the classifier calls benign, in order."""
    return [p for p, q in zip(labels["prompts"], labels["prompt_prob"]) if q < 0.5]


def dev_labels(model, tokenizer, cache: Path) -> dict:
    """Dev prefixes, their classifier probabilities and those of unsteered continuations."""
    from act_core.hf import data
    from act_core.hf.data.judges import toxicity_probability
    from act_core.hf.generate import generate

    if cache.exists():
        result = json.loads(cache.read_text(encoding="utf-8"))
        if "greedy_benign" not in result:  # added later: greedy continuations, benign prompts
            result["greedy_benign"] = generate(model, tokenizer, _benign(result), None, 1.0,
                                               max_new_tokens=32, do_sample=False,
                                               batch_size=32)
            cache.write_text(json.dumps(result) + "\n", encoding="utf-8")
        return result
    prompts = data.rtp_split("dev")
    result = {"prompts": prompts, "prompt_prob": toxicity_probability(prompts).tolist()}
    for seed in (0, 1):
        texts = generate(model, tokenizer, prompts, None, 1.0, max_new_tokens=32, seed=seed,
                         batch_size=32)
        result[f"seed{seed}"], result[f"prob{seed}"] = texts, toxicity_probability(texts).tolist()
    cache.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return result


def pooled(gate, acts: list) -> torch.Tensor:
    """Each text's max token score (-inf for a text with no scored token)."""
    return torch.tensor([float(gate.scores(a).max()) if a.shape[0] else float("-inf")
                         for a in acts])


def run(args) -> dict:
    from act_core.hf import data

    model, tokenizer = hf.load_causal_lm("smollm2")
    source, target = data.load_builtin("toxicity:paired")
    labels = dev_labels(model, tokenizer, args.cache)
    benign = torch.tensor([q < 0.5 for q in labels["prompt_prob"]])
    cont = torch.tensor([max(a, b) >= 0.5 for a, b in zip(labels["prob0"], labels["prob1"])])
    prose = data.heldout_prose(516)[500:516]
    positives = _positives(tokenizer, source, target, 64)
    half = len(source) // 2
    greedy_texts = [p + c for p, c in zip(_benign(labels), labels["greedy_benign"])]
    rows = []
    for layers in args.layers:
        site = Site.parse(reader_site(model, layers))
        acts = {name: _token_activations(model, tokenizer, texts, site, length)
                for name, texts, length in (("source", source, 64), ("target", target, 64),
                                            ("dev", labels["prompts"], 64), ("prose", prose, 64),
                                            ("greedy", greedy_texts, 128))}
        held = []
        for fit_part, test_part in ((slice(0, half), slice(half, None)),
                                    (slice(half, None), slice(0, half))):
            gate = fit_sequence_gate(str(site), acts["source"][fit_part],
                                     acts["target"][fit_part], positives[fit_part])
            held.append(_auroc(pooled(gate, acts["source"][test_part]),
                               pooled(gate, acts["target"][test_part])))
        for quantile in args.quantiles:
            gate = fit_sequence_gate(str(site), acts["source"], acts["target"], positives,
                                     quantile=quantile)
            dev = pooled(gate, acts["dev"])
            on = dev > 0
            row = {"layers": layers, "quantile": quantile, "site": str(site),
                   "heldout_auroc": sum(held) / 2, "train_auroc": gate.auroc,
                   "source_on": gate.source_on, "target_on": gate.target_on,
                   "dev_on_benign_prompt": float(on[benign].double().mean()),
                   "dev_on_toxic_prompt": float(on[~benign].double().mean()),
                   "dev_on_toxic_continuation": float(on[cont].double().mean()),
                   "dev_on_benign_greedy": float((pooled(gate, acts["greedy"]) > 0)
                                                 .double().mean()),
                   "dev_auroc_prompt_toxic": _auroc(dev[~benign], dev[benign]),
                   "dev_auroc_continuation_toxic": _auroc(dev[cont], dev[~cont]),
                   "prose_on": float((pooled(gate, acts["prose"]) > 0).double().mean())}
            rows.append(row)
            log.info("%s", row)
    lines = ["| reader (layers) | quantile | held-out AUROC | dev on: benign / toxic prompt / "
             "toxic continuation | benign on over prompt + greedy | dev AUROC: prompt / "
             "continuation | prose on |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['layers']} | {r['quantile']:g} | {r['heldout_auroc']:.2f} | "
              f"{r['dev_on_benign_prompt']:.2f} / {r['dev_on_toxic_prompt']:.2f} / "
              f"{r['dev_on_toxic_continuation']:.2f} | {r['dev_on_benign_greedy']:.2f} | "
              f"{r['dev_auroc_prompt_toxic']:.2f} / {r['dev_auroc_continuation_toxic']:.2f} | "
              f"{r['prose_on']:.3f} |" for r in rows]
    result = {"n_dev": len(benign), "n_benign": int(benign.sum()),
              "n_toxic_continuation": int(cont.sum()), "rows": rows, "table": "\n".join(lines)}
    print(result["table"])
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8, 10, 12, 16])
    p.add_argument("--quantiles", nargs="+", type=float, default=[1.0],
                   help="threshold quantiles of the target tokens' scores (1: their maximum)")
    p.add_argument("--cache", type=Path,
                   default=ROOT / "benchmarks/results/llm_gate_dev_unsteered.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    result = run(args)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
