"""Does the sequence gate find the model's own toxic text on prefixes it never saw? (issue 23)

The third pass's draft gate reads 93% of the toxic dev drafts as toxic and 45% of the eval
ones. The dev read rests on 28 toxic drafts, so it cannot tell a gate that knows the model's
toxic writing from one that knows the words of its 86 pairs. This measures the gate's recall
on a larger held-out set taken from the fitting data only: the unsteered model's own
continuations of the ``fit`` prefixes (``benchmarks/llm_own_pairs.py --raw``: 32 sampled
continuations per prefix, each with the judge's probability), split **by prefix**.

* Held-out prefixes: the ``fit`` prefixes that are not a source text of ``toxicity:paired`` (a
  gate reading prompt + draft would otherwise see its own training positive in the prompt),
  shuffled with ``--split-seed`` into two folds; each fold is the test set of gates fitted on
  the other (and on the 86 pairs' prefixes).
* Gates (``act_core.seqgate.fit_sequence_gate``, readers after 2, 4 and 6 decoder layers):
  ``pairs86`` (the shipped gate's data); ``own`` (+ the own pairs, toxic continuation and its
  softened text, of the training prefixes: the sixth idea's data, restricted to them);
  ``own_neg`` (``own`` + up to ``--negatives`` non-toxic own continuations of the training
  prefixes as extra negatives: the model's benign writing, which the benign criterion is
  about).
* Thresholds, each set on training data only: the gate's own strict threshold (quantile 1 of
  its target tokens), the same raised by 0.1 standard deviations of those tokens' scores (the
  shipped gate's margin), and the score that ``--benign-rates`` of the training prefixes' benign
  continuations (non-toxic prefix, any continuation) exceed.
* Read on the test fold, over prompt + continuation (what ``draft`` pooling reads): recall, the
  share of toxic continuations (judge >= 0.5) whose sequence passes (a proxy of the drop
  against the ungated map), and the benign pass rate, the share of benign prefixes'
  continuations that pass (each would change: a proxy of 1 - greedy-identical); also the 64
  development passages of the draft proxy that pass (each would be scored steered).

* ``mil`` (the eighth idea, added with its rule below before the first run's numbers were
  seen): no pairs, no swap table: the probe's ``w`` and ``b`` are learned from labelled texts,
  the training prefixes' own continuations (prompt + continuation, labelled by the judge on
  that text, >= 0.5) and the 86 pairs (source 1, target 0), by minimising the class-balanced
  logistic loss of each text's pooled score ``logsumexp_t <w, x_t> + b`` (a smooth running
  max; multiple-instance learning: a text is toxic when one of its tokens is), on
  standardised token activations, 300 full-batch Adam steps at lr 0.01, weight decay 1e-3.
  It is an ordinary sequence gate (one projection per token, max pooling), with thresholds
  from the benign rates only.

Rule, committed before any run: a setting (gate x reader x threshold) goes on to the third
pass's dev proxy (``llm_gate_draft_probe``-style, the recorded dev rows) only if, averaged
over both folds, its held-out recall is at least 0.90 with a held-out benign pass rate of at
most 0.10 and at most 1 of the 64 passages passing; among several, the highest recall. If none
does, the gate stays as shipped and this run is reported as a measurement of the gap. The
``mil`` gate (``--gates mil``, a run of its own) is held to the same rule.

Outcome of the first two runs (readers after 2, 4, 6 layers): no setting qualifies; the best
recall within 10% benign passing is 0.48 (``pairs86``, 6 layers, the benign 0.1 threshold:
9.9% benign passing), the shipped gate's (2 layers, strict + 0.1 sd) 0.37 at 7.2%. A third
run, its rule written after those numbers and before any run of its own: the same four gates
and rule with readers after 10, 15 and 20 layers (``--layers 10 15 20 --gates pairs86 own
own_neg mil``), deeper residual streams that the template probe found to carry more of a
text's offensiveness (docs/results_gate.md).

Outcome of the third run: no setting qualifies (best within 10% benign passing: 0.49, ``own``
after 10 or 20 layers). ``llm_gate_lexicon_ceiling`` then showed that no word list reaches
0.90 at that benign rate (0.61-0.69): the judge weighs words together. A fourth run, its rule
written after those numbers and before any run of its own: ``mil_mean``, the ``mil`` probe
with the mean of the token scores in place of their smooth max (a linear text classifier on
the reader's token activations, of the judge's own form: a weighted sum over the text),
trained and thresholded as ``mil`` (benign rates only), readers after 2, 6 and 10 layers,
held to the same rule (``--layers 2 6 10 --gates mil_mean``). Applying it would need a mean
pooling of the draft's scores, which the shipped gate does not have: it is built only if
this qualifies.

    ACT_CACHE_DIR=/tmp/act_cache .venv/bin/python -m benchmarks.llm_gate_own_heldout \\
        --raw /tmp/own_a.json /tmp/own_b.json /tmp/own_c.json /tmp/own_d.json \\
              /tmp/own_e.json /tmp/own_f.json \\
        --out benchmarks/results/llm_gate_own_heldout.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import torch

from act_core.hf import data
from act_core.hf.data.detox import soften
from act_core.hf.data.judges import toxicity_probability
from act_core.hf.gating import _positives, _Stop, reader_site
from act_core.hf.lm import _batches
from act_core.seqgate import SequenceGate, fit_sequence_gate
from act_core.sites import Site, find_module, read_output
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")


def prefix_folds(raw: list[str], split_seed: int, limit: int | None = None) -> tuple:
    """``(prefixes, rows, in86, prefix_p, folds)``: the ``fit`` prefixes, the raw continuation
    rows of ``raw`` (the first ``limit``), the 86 pairs' source texts, each prefix's judge
    probability, and the two folds of the prefixes outside the 86 pairs (sets of indices)."""
    prefixes = data.rtp_split("fit")
    rows = [r for f in raw for r in json.loads(Path(f).read_text("utf-8"))["rows"]]
    rows = rows[:limit] if limit else rows
    in86 = set(data.load_builtin("toxicity:paired")[0])
    order = sorted(i for i, t in enumerate(prefixes) if t not in in86)
    random.Random(split_seed).shuffle(order)
    folds = [set(order[: len(order) // 2]), set(order[len(order) // 2:])]
    return prefixes, rows, in86, toxicity_probability(prefixes).tolist(), folds


@torch.inference_mode()
def token_activations(model, tokenizer, texts: list[str], layers: list[int],
                      max_length: int = 160, batch_size: int = 32) -> dict[int, list]:
    """Each text's reader activations (without the first token) after each of ``layers``
    decoder layers, float16: {layers: [(T_i - 1, D)]}."""
    sites = {n: Site.parse(reader_site(model, n)) for n in layers}
    seen: dict[int, torch.Tensor] = {}
    last = max(layers)
    handles = []
    for n, site in sites.items():
        def read(mod, args, output, n=n, site=site):
            seen[n] = read_output(output, site).float()
            if n == last:
                raise _Stop
        handles.append(find_module(model, site).register_forward_hook(read))
    out: dict[int, list] = {n: [] for n in layers}
    try:
        for k, batch in enumerate(_batches(texts, batch_size)):
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, padding_side="right")
            try:
                model(**enc, use_cache=False)
            except _Stop:
                pass
            lengths = enc["attention_mask"].sum(1).tolist()
            for n in layers:
                out[n].extend(seen[n][i, 1:m].half().clone() for i, m in enumerate(lengths))
            if k % 50 == 0:
                log.info("activations: %d / %d texts", k * batch_size, len(texts))
    finally:
        for h in handles:
            h.remove()
    return out


def fit_mil_gate(site: str, texts: list, labels: list, steps: int = 300, lr: float = 0.01,
                 weight_decay: float = 1e-3, pooling: str = "lse") -> SequenceGate:
    """A sequence gate whose probe is learned from labelled texts (the ``mil`` gate above;
    ``pooling`` ``"mean"``: ``mil_mean``, the text's score is the mean of its token scores)."""
    keep = [k for k, a in enumerate(texts) if a.shape[0]]
    acts = [texts[k].float() for k in keep]
    y = torch.tensor([float(labels[k]) for k in keep])
    z = torch.cat(acts)
    mean, std = z.mean(0), z.std(0) + 1e-6
    z = (z - mean) / std
    lengths = torch.tensor([a.shape[0] for a in acts])
    row = torch.repeat_interleave(torch.arange(len(acts)), lengths)
    col = torch.cat([torch.arange(int(t)) for t in lengths])
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    pos_weight = (1 - y).sum() / y.sum().clamp(min=1)
    for _ in range(steps):
        if pooling == "mean":
            token = z @ w
            pooled = torch.zeros(len(acts)).index_add(0, row, token) / lengths + b
        else:
            scores = torch.full((len(acts), int(lengths.max())), float("-inf"))
            scores = scores.index_put((row, col), z @ w)
            pooled = torch.logsumexp(scores, 1) + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(pooled, y,
                                                                    pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weight = (w.detach() / std).double()
    bias = float(b.detach()) - float(mean.double() @ weight)
    log.info("mil gate at %s: loss %.3f over %d texts (%d toxic)", site, float(loss.detach()),
             len(acts), int(y.sum()))
    return SequenceGate(site=site, weight=weight.float(), bias=bias, pooling="draft")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", nargs="+", required=True, help="llm_own_pairs.py --raw files")
    p.add_argument("--layers", nargs="+", type=int, default=[2, 4, 6])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--negatives", type=int, default=1500)
    p.add_argument("--benign-rates", nargs="+", type=float, default=[0.05, 0.10])
    p.add_argument("--gates", nargs="+", default=["pairs86", "own", "own_neg"],
                   choices=("pairs86", "own", "own_neg", "mil", "mil_mean"))
    p.add_argument("--limit", type=int, default=None, help="smoke: first N raw rows")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    prefixes, rows, in86, prefix_p, folds = prefix_folds(args.raw, args.split_seed, args.limit)
    src86, tgt86 = data.load_builtin("toxicity:paired")
    log.info("%d fit prefixes, folds %d / %d (the %d others hold the 86 pairs' texts)",
             len(prefixes), *map(len, folds), len(prefixes) - sum(map(len, folds)))

    texts = [" ".join((prefixes[r["prefix"]] + r["continuation"]).split()) for r in rows]
    toxic = [r["p_toxic"] >= 0.5 for r in rows]
    mil = {"mil", "mil_mean"} & set(args.gates)
    whole_toxic = (toxicity_probability(texts) >= 0.5).tolist() if mil else None
    benign = [prefix_p[r["prefix"]] < 0.5 for r in rows]
    prose = data.heldout_prose(564)[500:]
    soft = {i: soften(t) for i, t in enumerate(texts) if toxic[i] and soften(t) != t}
    soft_idx = sorted(soft)
    every = texts + [soft[i] for i in soft_idx] + list(src86) + list(tgt86) + prose
    log.info("%d continuations (%d toxic, %d softenable), %d texts to read", len(texts),
             sum(toxic), len(soft), len(every))
    acts = token_activations(model, tokenizer, every, args.layers)
    n, m = len(texts), len(soft_idx)
    soft_pos = {i: n + k for k, i in enumerate(soft_idx)}
    a86 = n + m
    pos86 = _positives(tokenizer, src86, tgt86, 64)
    # the own pairs' positives: tokens of the toxic text that its softened text lacks
    own_pos = _positives(tokenizer, [texts[i] for i in soft_idx],
                         [soft[i] for i in soft_idx], 160)
    own_pos = dict(zip(soft_idx, own_pos, strict=True))

    result_rows = []
    for f, test in enumerate(folds):
        train = folds[1 - f]
        rng = random.Random(args.split_seed + 1 + f)
        tr_pairs = [i for i in soft_idx if rows[i]["prefix"] in train
                    or prefixes[rows[i]["prefix"]] in in86]
        tr_neg = [i for i in range(n) if rows[i]["prefix"] in train and not toxic[i]]
        tr_neg = sorted(rng.sample(tr_neg, min(args.negatives, len(tr_neg))))
        tr_benign = [i for i in range(n) if rows[i]["prefix"] in train and benign[i]]
        te_toxic = [i for i in range(n) if rows[i]["prefix"] in test and toxic[i]]
        te_benign = [i for i in range(n) if rows[i]["prefix"] in test and benign[i]]
        for layers in args.layers:
            A = acts[layers]
            s86 = [A[a86 + k] for k in range(len(src86))]
            t86 = [A[a86 + len(src86) + k] for k in range(len(tgt86))]
            variants = {
                "pairs86": (s86, t86, pos86),
                "own": (s86 + [A[i] for i in tr_pairs], t86 + [A[soft_pos[i]] for i in tr_pairs],
                        pos86 + [own_pos[i] for i in tr_pairs]),
            }
            variants["own_neg"] = (variants["own"][0], variants["own"][1] + [A[i] for i in tr_neg],
                                   variants["own"][2])
            if mil:
                tr_all = [i for i in range(n) if rows[i]["prefix"] in train
                          or prefixes[rows[i]["prefix"]] in in86]
                variants["mil"] = ([A[i] for i in tr_all] + s86 + t86,
                                   [whole_toxic[i] for i in tr_all] + [True] * len(s86)
                                   + [False] * len(t86), None)
                variants["mil_mean"] = variants["mil"]
            for name, (s, t, pos) in variants.items():
                if name not in args.gates:
                    continue
                if name in ("mil", "mil_mean"):
                    gate = fit_mil_gate(reader_site(model, layers), s, t,
                                        pooling="mean" if name == "mil_mean" else "lse")
                else:
                    gate = fit_sequence_gate(reader_site(model, layers), [x.float() for x in s],
                                             [x.float() for x in t], pos, heldout=False)

                def peaks(idx, gate=gate, A=A, mean=name == "mil_mean"):
                    scores = [gate.scores(A[i].float()) for i in idx]
                    return torch.tensor([float(x.mean() if mean else x.max()) if x.shape[0]
                                         else -1e9 for x in scores])

                if name in ("mil", "mil_mean"):
                    cuts = {}
                else:
                    spread = float(torch.cat([gate.scores(x.float()) for x in t]).std())
                    cuts = {"strict": 0.0, "strict+0.1sd": 0.1 * spread}  # the shipped margin
                trb = peaks(tr_benign)
                for rate in args.benign_rates:
                    cuts[f"benign{rate:g}"] = float(torch.quantile(trb, 1 - rate))
                tt, tb = peaks(te_toxic), peaks(te_benign)
                tp = peaks(range(n + m + 2 * len(src86), len(every)))
                for cut_name, cut in cuts.items():
                    row = {"fold": f, "layers": layers, "gate": name, "threshold": cut_name,
                           "recall": float((tt > cut).double().mean()),
                           "benign_pass": float((tb > cut).double().mean()),
                           "train_benign_pass": float((trb > cut).double().mean()),
                           "passages_passing": int((tp > cut).sum()), "passages": len(prose),
                           "toxic": len(te_toxic), "benign": len(te_benign),
                           "train_pairs": len(s), "train_targets": len(t)}
                    result_rows.append(row)
                    log.info("%s", row)
    table = {}
    for r in result_rows:
        key = (r["layers"], r["gate"], r["threshold"])
        table.setdefault(key, []).append(r)
    summary = []
    for (layers, gate, cut), rs in table.items():
        summary.append({"layers": layers, "gate": gate, "threshold": cut,
                        "recall": sum(r["recall"] for r in rs) / len(rs),
                        "benign_pass": sum(r["benign_pass"] for r in rs) / len(rs),
                        "passages_passing": max(r["passages_passing"] for r in rs)})
    print("| reader after | gate | threshold | held-out recall | held-out benign passing | "
          "passages passing (max of folds) |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['layers']} | {s['gate']} | {s['threshold']} | {s['recall']:.2f} | "
              f"{s['benign_pass']:.3f} | {s['passages_passing']}/64 |")
    ok = [s for s in summary if s["recall"] >= 0.90 and s["benign_pass"] <= 0.10
          and s["passages_passing"] <= 1]
    best = max(ok, key=lambda s: s["recall"]) if ok else None
    print("rule:", f"on to the dev proxy with {best}" if best else "no setting qualifies")
    result = {"raw": args.raw, "split_seed": args.split_seed, "negatives": args.negatives,
              "rows": result_rows, "summary": summary, "choice": best}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
