"""How far could a gate learned from the fitting prefixes' text reach? A word-list ceiling.

``llm_gate_own_heldout`` found no linear token probe that reads more than half of the model's
own toxic continuations of held-out ``fit`` prefixes within 10% benign passing. A probe learns
from what its fitting texts show; this asks how much a perfect *word* detector learned from the
same texts would read. On the same split by prefix (the 207 ``fit`` prefixes outside the 86
pairs, two folds, ``--split-seed``):

* the *culprit words* of each toxic continuation (judge >= 0.5): deleted greedily, each time
  the word whose deletion lowers the judge's probability most, until the text scores below
  0.5 (at most ``--max-words``);
* lexicon ``fold``: the culprit words of the training fold's and the 86 pairs' prefixes' toxic
  continuations; lexicon ``table``: the swap table's words (``act_core.hf.data.detox``);
  lexicon ``both``; lexicon ``chosen``: words of ``both`` picked greedily on the training fold
  (each time the word that adds the most toxic continuations per benign one it adds, until the
  next would take the training fold's benign passing above ``--benign-rate``), the best a word
  list can do at that benign rate;
* a text passes when it holds a lexicon word (case-insensitive), read over prompt +
  continuation (as the ``draft`` gate reads) or over the continuation alone.

Read on the test fold, mean of both folds: recall (toxic continuations passing) and benign
passing (the non-toxic prefixes' continuations), as in ``llm_gate_own_heldout``. It chooses
nothing: it bounds what a gate that recognises words could do with this data.

    .venv/bin/python -m benchmarks.llm_gate_lexicon_ceiling \\
        --raw /tmp/own_a.json /tmp/own_b.json /tmp/own_c.json /tmp/own_d.json \\
              /tmp/own_e.json /tmp/own_f.json --out benchmarks/results/llm_gate_lexicon_ceiling.json
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter

from act_core.hf.data.detox import SUBSTITUTIONS
from act_core.hf.data.judges import toxicity_probability
from benchmarks.llm_common import save_json, setup
from benchmarks.llm_gate_own_heldout import prefix_folds

log = logging.getLogger("benchmarks")
WORD = re.compile(r"[A-Za-z]+")


def culprits(text: str, max_words: int = 5) -> list[str]:
    """The words whose greedy deletion takes ``text`` below the judge's 0.5 (lower case)."""
    spans = [m.span() for m in WORD.finditer(text)]
    removed: list[int] = []
    for _ in range(max_words):
        left = [k for k in range(len(spans)) if k not in removed]
        if not left:
            break
        variants = []
        for k in left:
            gone = set(removed) | {k}
            out, last = [], 0
            for j, (a, b) in enumerate(spans):
                if j in gone:
                    out.append(text[last:a])
                    last = b
            out.append(text[last:])
            variants.append("".join(out))
        probs = toxicity_probability(variants)
        best = int(probs.argmin())
        removed.append(left[best])
        if probs[best] < 0.5:
            break
    return [text[spans[k][0]:spans[k][1]].lower() for k in removed]


def passes(text: str, lexicon: set[str]) -> bool:
    return any(w.lower() in lexicon for w in WORD.findall(text))


def choose_words(candidates: set[str], toxic: list[str], benign: list[str],
                 rate: float) -> set[str]:
    """Words picked greedily (most toxic texts added per benign text added) while at most
    ``rate`` of the benign texts hold one."""
    tox = [{w.lower() for w in WORD.findall(t)} for t in toxic]
    ben = [{w.lower() for w in WORD.findall(t)} for t in benign]
    chosen: set[str] = set()
    tox_left, ben_hit = set(range(len(tox))), set()
    budget = rate * len(ben)
    while True:
        best, best_key = None, None
        for w in sorted(candidates - chosen):  # ties: alphabetical, not hash order
            gain = sum(1 for k in tox_left if w in tox[k])
            cost = sum(1 for k in range(len(ben)) if k not in ben_hit and w in ben[k])
            if gain == 0 or len(ben_hit) + cost > budget:
                continue
            key = (gain / (cost + 1), gain)
            if best_key is None or key > best_key:
                best, best_key = w, key
        if best is None:
            return chosen
        chosen.add(best)
        tox_left = {k for k in tox_left if best not in tox[k]}
        ben_hit |= {k for k in range(len(ben)) if best in ben[k]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", nargs="+", required=True, help="llm_own_pairs.py --raw files")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-words", type=int, default=5)
    p.add_argument("--benign-rate", type=float, default=0.10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    prefixes, rows, in86, prefix_p, folds = prefix_folds(args.raw, args.split_seed)
    toxic = [r["p_toxic"] >= 0.5 for r in rows]
    words = {}
    for k, r in enumerate(rows):
        if toxic[k]:
            words[k] = culprits(r["continuation"], args.max_words)
    log.info("culprit words of %d toxic continuations: %d distinct", len(words),
             len({w for ws in words.values() for w in ws}))
    table = set(SUBSTITUTIONS)
    result_rows = []
    for f, test in enumerate(folds):
        train = folds[1 - f]
        in_train = [r["prefix"] in train or prefixes[r["prefix"]] in in86 for r in rows]
        fold_lex = {w for k, ws in words.items() if in_train[k] for w in ws}
        te_toxic = [k for k, r in enumerate(rows) if r["prefix"] in test and toxic[k]]
        te_benign = [k for k, r in enumerate(rows) if r["prefix"] in test
                     and prefix_p[r["prefix"]] < 0.5]
        unseen = Counter(w for k in te_toxic for w in words[k] if w not in fold_lex)
        tr_toxic = [k for k, r in enumerate(rows) if in_train[k] and toxic[k]]
        tr_benign = [k for k, r in enumerate(rows) if r["prefix"] in train
                     and prefix_p[r["prefix"]] < 0.5]
        for scope in ("prompt+continuation", "continuation"):
            def text(k, scope=scope):
                r = rows[k]
                return (prefixes[r["prefix"]] + r["continuation"]
                        if scope != "continuation" else r["continuation"])

            chosen = choose_words(fold_lex | table, [text(k) for k in tr_toxic],
                                  [text(k) for k in tr_benign], args.benign_rate)
            for name, lexicon in (("fold", fold_lex), ("table", table),
                                  ("both", fold_lex | table), ("chosen", chosen)):
                row = {"fold": f, "lexicon": name, "scope": scope, "words": len(lexicon),
                       "recall": sum(passes(text(k), lexicon) for k in te_toxic) / len(te_toxic),
                       "benign_pass": sum(passes(text(k), lexicon) for k in te_benign)
                       / len(te_benign), "toxic": len(te_toxic), "benign": len(te_benign)}
                if name == "chosen":
                    row["chosen_words"] = sorted(lexicon)
                result_rows.append(row)
                log.info("%s", {k: v for k, v in row.items() if k != "chosen_words"})
        result_rows.append({"fold": f, "unseen_culprits": unseen.most_common(40)})
    summary = []
    for name in ("fold", "table", "both", "chosen"):
        for scope in ("prompt+continuation", "continuation"):
            rs = [r for r in result_rows if r.get("lexicon") == name and r["scope"] == scope]
            summary.append({"lexicon": name, "scope": scope,
                            "recall": sum(r["recall"] for r in rs) / len(rs),
                            "benign_pass": sum(r["benign_pass"] for r in rs) / len(rs),
                            "words": [r["words"] for r in rs]})
    print("| lexicon | read over | words (per fold) | held-out recall | held-out benign passing |")
    print("|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['lexicon']} | {s['scope']} | {s['words']} | {s['recall']:.2f} | "
              f"{s['benign_pass']:.3f} |")
    result = {"raw": args.raw, "split_seed": args.split_seed, "max_words": args.max_words,
              "rows": result_rows, "summary": summary}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
