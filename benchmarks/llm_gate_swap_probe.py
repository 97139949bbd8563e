"""Does fitting the sequence gate on rewritten pairs teach it more offensive words? Issue 23, dev.

The look-ahead gate reads 45% of the toxic eval continuations as toxic (93% on dev): its probe
knows the words of the 86 ``toxicity:paired`` pairs, not "offensive" (``llm_gate_unseen_probe``).
:func:`swapped_pairs` adds rewrites of the same prefixes with the substitution table's other
words of the same role (:func:`swap_words`). This measures, on the fitting texts only (no
generation, no dev or eval prompts), what the rewrites buy and cost:

* the table's words are split in two by stem (words sharing their first four letters stay
  together), seeded: ``taught`` words may appear in the rewrites, ``held`` words never do;
* the pairs are split in two halves; the gate (``act fit --gate sequence``'s fit, strict) is fitted
  on one half's pairs plus ``copies`` rewrites of them with ``taught`` words, and read on the
  other half, both ways round;
* on the held-out half: its own texts (tokens whose id the fitting texts never swapped:
  ``unseen``), one rewrite with ``taught`` words (words the rewrites showed, in new sentences),
  one with ``held`` words (words nothing showed), and every softened text of those three.

Per reader depth and number of copies (0 = today's gate): the share of swapped tokens above the
threshold in each held-out set, the held-out toxic texts with some token above it, and the
softened texts with some token above it (each would be steered).

    python -m benchmarks.llm_gate_swap_probe --out benchmarks/results/llm_gate_swap_probe.json
"""

from __future__ import annotations

import argparse
import logging
import random
import re
from collections.abc import Collection

import torch

from act_core.hf import data
from act_core.hf.data.detox import _WORD, ROLES, SUBSTITUTIONS, _case_like, soften
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import fit_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")
MAX_LENGTH = 64
_ROLE_OF = {w: role for role, words in ROLES.items() for w in words}


def swap_words(text: str, rng: random.Random, vocabulary: Collection[str] | None = None) -> str:
    """``text`` with every word of the substitution table replaced by another word of the same
    role (:data:`act_core.hf.data.detox.ROLES`), drawn by ``rng`` from ``vocabulary`` (default:
    the whole table); ``soften`` of the result is its counterfactual. Roles with no word in
    ``vocabulary`` keep their words."""
    pools = {role: sorted(w for w in words if vocabulary is None or w in vocabulary)
             for role, words in ROLES.items()}

    def swap(match: re.Match) -> str:
        word = match.group(0)
        role = _ROLE_OF.get(word.lower())
        if role is None or not pools[role]:
            return word
        return _case_like(rng.choice(pools[role]), word)

    return _WORD.sub(swap, text)


def swapped_pairs(source: list, copies: int, vocabulary: Collection[str] | None = None,
                  seed: int = 0, targets: str = "own") -> tuple[list, list]:
    """``source`` and its softened texts, plus ``copies`` rewrites of each text that has a table
    word, paired with their own softened text (``targets = "own"``) or with the original's
    (``"original"``: no new target text, only new positives)."""
    rewrites = _rewrites(source, copies, vocabulary, seed)
    return (list(source) + [new for _, new in rewrites],
            [soften(t) for t in source]
            + [soften(new if targets == "own" else text) for text, new in rewrites])


def _rewrites(texts: list, copies: int, vocabulary: Collection[str] | None,
              seed: int) -> list[tuple[str, str]]:
    """``(text, rewrite)`` for ``copies`` rounds over the texts that have a table word."""
    rng = random.Random(seed)
    return [(t, swap_words(t, rng, vocabulary)) for _ in range(copies) for t in texts
            if soften(t) != t]


def split_vocabulary(seed: int) -> tuple[set, set]:
    """The table's words in two halves by stem (first four letters), seeded."""
    stems: dict[str, list[str]] = {}
    for word in sorted(SUBSTITUTIONS):
        stems.setdefault(word[:4], []).append(word)
    keys = sorted(stems)
    random.Random(seed).shuffle(keys)
    taught = {w for k in keys[: len(keys) // 2] for w in stems[k]}
    return taught, set(SUBSTITUTIONS) - taught


class _Reader:
    """Reader activations and positives of texts, cached by text."""

    def __init__(self, model, tokenizer, site: str):
        self.model, self.tokenizer, self.site = model, tokenizer, Site.parse(site)
        self.cache: dict[str, torch.Tensor] = {}

    def acts(self, texts: list) -> list:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            for t, a in zip(new, _token_activations(self.model, self.tokenizer, new, self.site,
                                                    MAX_LENGTH), strict=True):
                self.cache[t] = a
        return [self.cache[t] for t in texts]

    def ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer([text], truncation=True,
                                           max_length=MAX_LENGTH)["input_ids"][0][1:])


def _read(gate, reader: _Reader, sources: list, fitted_ids: set | None) -> dict:
    """Swapped tokens above the threshold (only ids outside ``fitted_ids`` when given), toxic
    texts with such a token above it, softened texts with any token above it."""
    targets = [soften(t) for t in sources]
    positives = _positives(reader.tokenizer, sources, targets, MAX_LENGTH)
    on = total = texts_on = texts = 0
    for src, acts, mask in zip(sources, reader.acts(sources), positives, strict=True):
        n = acts.shape[0]
        keep = mask[:n].clone()
        if fitted_ids is not None:
            keep &= torch.tensor([t not in fitted_ids for t in reader.ids(src)[:n].tolist()],
                                 dtype=torch.bool)
        if not keep.any():
            continue
        passing = gate.scores(acts) > 0
        on, total = on + int((passing & keep).sum()), total + int(keep.sum())
        texts_on, texts = texts_on + int((passing & keep).any()), texts + 1
    softened_on = sum(int((gate.scores(a) > 0).any()) for a in reader.acts(targets)
                      if a.shape[0])
    return {"tokens_on": on, "tokens": total, "texts_on": texts_on, "texts": texts,
            "softened_on": softened_on, "softened": len(targets)}


def _add(into: dict, part: dict) -> None:
    for k, v in part.items():
        into[k] = into.get(k, 0) + v


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", type=int, default=[2, 4, 6])
    p.add_argument("--copies", nargs="+", type=int, default=[0, 4, 8])
    p.add_argument("--seed", type=int, default=0, help="vocabulary split and rewrites")
    p.add_argument("--targets", choices=("own", "original"), default="own",
                   help="a rewrite's target: its own softened text, or the original's")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, _ = data.load_builtin("toxicity:paired")
    taught, held = split_vocabulary(args.seed)
    log.info("taught %d words, held out %d", len(taught), len(held))
    half = len(source) // 2
    halves = [source[:half], source[half:]]
    rows = []
    for layers in args.layers:
        site = reader_site(model, layers)
        reader = _Reader(model, tokenizer, site)
        for copies in args.copies:
            row = {"layers": layers, "copies": copies}
            parts = {"own": {}, "taught": {}, "held": {}}
            for k, (fit, other) in enumerate((halves, halves[::-1])):
                fit_src, fit_tgt = swapped_pairs(fit, copies, taught, args.seed + 1 + k,
                                                 args.targets)
                positives = _positives(tokenizer, fit_src, fit_tgt, MAX_LENGTH)
                gate = fit_sequence_gate(site, reader.acts(fit_src), reader.acts(fit_tgt),
                                         positives)
                fitted_ids = set(torch.cat([reader.ids(s)[m] for s, m in
                                            zip(fit_src, positives, strict=True)
                                            if m.any()]).tolist())
                _add(parts["own"], _read(gate, reader, other, fitted_ids))
                for name, words, offset in (("taught", taught, 11), ("held", held, 21)):
                    rewritten = [new for _, new in _rewrites(other, 1, words,
                                                             args.seed + offset + k)]
                    _add(parts[name], _read(gate, reader, rewritten, None))
            row.update(parts)
            rows.append(row)
            log.info("%s", row)
    print(f"taught words {len(taught)}, held-out words {len(held)} (seed {args.seed}), "
          f"targets {args.targets}")
    print("| reader after | rewrites per pair | held-out texts, unseen-word tokens on | "
          "rewritten with taught words: tokens on / texts on | rewritten with held-out words: "
          "tokens on / texts on | softened texts on (all three sets) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        o, t, h = r["own"], r["taught"], r["held"]
        soft = o["softened_on"] + t["softened_on"] + h["softened_on"]
        softs = o["softened"] + t["softened"] + h["softened"]
        print(f"| {r['layers']} | {r['copies']} | {o['tokens_on']}/{o['tokens']} | "
              f"{t['tokens_on']}/{t['tokens']} / {t['texts_on']}/{t['texts']} | "
              f"{h['tokens_on']}/{h['tokens']} / {h['texts_on']}/{h['texts']} | "
              f"{soft}/{softs} |")
    result = {"seed": args.seed, "targets": args.targets, "taught": sorted(taught),
              "held": sorted(held), "rows": rows}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
