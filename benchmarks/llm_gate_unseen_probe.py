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

``--likelihood`` adds a gate that reads the maps instead of a probe: a token's score is
``log p(token) - log p_steered(token)`` (how much less likely the toxicity maps, fitted on the
same half at docs/llm.md's sites and support, make it), thresholded at the ``--quantiles`` of
the fitting half's softened tokens' scores.

Fitting texts only, no generation, about a minute (``--likelihood``: three more):

    python -m benchmarks.llm_gate_unseen_probe --likelihood \
        --out benchmarks/results/llm_gate_unseen_probe.json

``--directions lda mean mean_raw`` compares act fit's discriminant with a plain difference of
means (the direction steering papers often read), each at the strict threshold; ``knn`` adds a
nearest-neighbour score, no direction at all:

    python -m benchmarks.llm_gate_unseen_probe --directions lda mean mean_raw \
        --out benchmarks/results/llm_gate_unseen_directions.json
"""

from __future__ import annotations

import argparse
import logging

import torch

from act_core import hf
from act_core.gate import separation_auroc
from act_core.hf import data
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import SequenceGate, fit_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")
SITES = ["post_norms", "mlp_out", "attn_out"]  # docs/llm.md's toxicity sites and support
SUPPORT = "q0.05-0.95"


def _counts() -> dict:
    return dict.fromkeys(("seen_on", "seen", "unseen_on", "unseen", "target_on", "targets"), 0)


def _tally(counts: dict, on: torch.Tensor, positives: torch.Tensor, ids: torch.Tensor,
           words: set, target_on: bool) -> None:
    """Add one held-out pair: ``on`` (T,) which of its source tokens pass, ``positives`` and
    ``ids`` the pair's swapped-token mask and token ids (tokens after the first), ``words`` the
    fitting half's swapped ids, ``target_on`` whether its softened text passes anywhere."""
    n = on.shape[0]
    mask = positives[:n]
    new = torch.tensor([t not in words for t in ids[:n].tolist()], dtype=torch.bool)
    counts["seen_on"] += int((on & mask & ~new).sum())
    counts["seen"] += int((mask & ~new).sum())
    counts["unseen_on"] += int((on & mask & new).sum())
    counts["unseen"] += int((mask & new).sum())
    counts["target_on"] += int(target_on)
    counts["targets"] += 1


def two_fold_pairs(tokenizer) -> tuple[list, list, list, list, list]:
    """``toxicity:paired`` split for two-fold reading: (source, target, each source text's
    swapped-token mask, its token ids after the first, the two halves of the pair indices)."""
    source, target = data.load_builtin("toxicity:paired")
    positives = _positives(tokenizer, source, target, 64)
    ids = [torch.tensor(tokenizer([s], truncation=True, max_length=64)["input_ids"][0][1:])
           for s in source]
    half = len(source) // 2
    return source, target, positives, ids, [list(range(half)), list(range(half, len(source)))]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8, 12, 18])
    p.add_argument("--directions", nargs="+", choices=("lda", "mean", "mean_raw", "knn"),
                   default=["lda"], help="the probe's direction: act fit's Ledoit-Wolf "
                   "discriminant (lda), or the difference of the positive and target tokens' "
                   "means, standardised per unit (mean) or raw (mean_raw); or no direction: "
                   "the nearest positive token against the nearest target token (knn); all "
                   "strict")
    p.add_argument("--likelihood", action="store_true")
    p.add_argument("--quantiles", nargs="+", type=float, default=[1, 0.999, 0.995, 0.99, 0.98,
                                                                 0.95])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target, positives, ids, halves = two_fold_pairs(tokenizer)
    rows = []
    for layers in args.layers:
        site = reader_site(model, layers)
        src = _token_activations(model, tokenizer, source, Site.parse(site), 64)
        tgt = _token_activations(model, tokenizer, target, Site.parse(site), 64)
        for direction in args.directions:
            counts, aurocs = _counts(), []
            for fit, held in (halves, halves[::-1]):
                gate = _gate(direction, site, [src[i] for i in fit], [tgt[i] for i in fit],
                             [positives[i] for i in fit])
                words = set(torch.cat([ids[i][positives[i]] for i in fit]).tolist())
                for i in held:
                    _tally(counts, gate.scores(src[i]) > 0, positives[i], ids[i], words,
                           bool((gate.scores(tgt[i]) > 0).any()))
                aurocs.append(_unseen_auroc(gate, [src[i] for i in held],
                                            [tgt[i] for i in held], [positives[i] for i in held],
                                            [ids[i] for i in held], words))
            rows.append({"layers": layers, "direction": direction, **counts,
                         "auroc_tokens": sum(a[0] for a in aurocs) / 2,
                         "auroc_texts": sum(a[1] for a in aurocs) / 2})
            log.info("%s", rows[-1])
    print("| reader after | direction | seen words above threshold | unseen words above "
          "threshold | held-out softened texts on | AUROC unseen-word tokens | AUROC "
          "unseen-word texts |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['direction']} | {r['seen_on']}/{r['seen']} "
              f"({r['seen_on'] / r['seen']:.2f}) "
              f"| {r['unseen_on']}/{r['unseen']} ({r['unseen_on'] / r['unseen']:.2f}) "
              f"| {r['target_on']}/{r['targets']} | {r['auroc_tokens']:.3f} "
              f"| {r['auroc_texts']:.3f} |")
    result = {"rows": rows}
    if args.likelihood:
        result["likelihood"] = _likelihood(model, tokenizer, source, target, positives, ids,
                                           halves, args.quantiles)
    if args.out:
        save_json(args.out, result)
    return result


def _unseen_auroc(gate, source: list, target: list, positives: list, ids: list,
                  words: set) -> tuple[float, float]:
    """Threshold-free ranking on held-out pairs: (held-out positive tokens of words the fitting
    half never swapped against every held-out softened token; the peak score of each held-out
    toxic text with such a word against the peak of each softened text)."""
    unseen, negatives, peaks, softened = [], [], [], []
    for src, tgt, mask, tokens in zip(source, target, positives, ids, strict=True):
        scores = gate.scores(src)
        n = scores.shape[0]
        new = mask[:n] & torch.tensor([t not in words for t in tokens[:n].tolist()],
                                      dtype=torch.bool)
        unseen.append(scores[new])
        negatives.append(gate.scores(tgt))
        softened.append(negatives[-1].max())
        if new.any():
            peaks.append(scores.max())
    return (separation_auroc(torch.cat(unseen), torch.cat(negatives)),
            separation_auroc(torch.stack(peaks), torch.stack(softened)))


class _NearestGate:
    """Not a product gate: a token's cosine similarity (centred) to its nearest positive token
    minus that to its nearest target token, less the largest such score of a fitting target
    token (leave-one-out), so that ``scores > 0`` is the strict threshold as for the others."""

    def __init__(self, positives: torch.Tensor, targets: torch.Tensor) -> None:
        self.centre = torch.cat([positives, targets]).mean(0)
        self.pos, self.neg = self._unit(positives), self._unit(targets)
        loo = ((self.neg @ self.pos.T).max(1).values
               - (self.neg @ self.neg.T).topk(2, dim=1).values[:, 1])  # not the token itself
        self.cut = float(loo.max())

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() - self.centre
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        u = self._unit(x)
        return (u @ self.pos.T).max(1).values - (u @ self.neg.T).max(1).values - self.cut


def _gate(direction: str, site: str, source: list, target: list, positives: list):
    """act fit's gate (``lda``), or a strict gate along the difference of the positive and the
    target tokens' means (``mean``: per-unit standardised, as the discriminant's coordinates;
    ``mean_raw``: raw), its threshold just above the largest target token score."""
    if direction == "lda":
        return fit_sequence_gate(site, source, target, positives)
    if direction == "knn":
        return _NearestGate(torch.cat([s[m[: s.shape[0]]] for s, m in
                                       zip(source, positives, strict=True)]), torch.cat(target))
    pos = torch.cat([s[m[: s.shape[0]]] for s, m in zip(source, positives, strict=True)]).double()
    neg = torch.cat(target).double()
    diff = pos.mean(0) - neg.mean(0)  # (D,)
    if direction == "mean":
        var = torch.cat([pos, neg]).var(0) + 1e-12
        diff = diff / var  # standardised difference, back in raw coordinates
    cut = float((neg @ diff).max())
    return SequenceGate(site=site, weight=diff.float(), bias=-cut - 1e-4 * abs(cut))


@torch.inference_mode()
@torch.no_grad()
def log_ratios(model, tokenizer, texts: list, maps, strength: float = 1.0,
               max_length: int = 64) -> list[torch.Tensor]:
    """Per text, ``log p - log p_steered`` of tokens 1..T-1 (T-1,), the maps at ``strength``
    with docs/llm.md's toxicity support."""
    out = []
    for text in texts:
        enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length)
        plain = model(**enc).logits[0, :-1].log_softmax(-1)
        with hf.steering(model, maps, strength, SUPPORT):
            steered = model(**enc).logits[0, :-1].log_softmax(-1)
        nxt = enc["input_ids"][0, 1:, None]
        out.append((plain.gather(1, nxt) - steered.gather(1, nxt))[:, 0])
    return out


def _likelihood(model, tokenizer, source, target, positives, ids, halves, quantiles) -> list:
    counts = {q: _counts() for q in quantiles}
    for fit, held in (halves, halves[::-1]):
        maps = hf.fit_lm(model, tokenizer, [source[i] for i in fit], [target[i] for i in fit],
                         SITES, incremental=False)
        reference = torch.cat([r[1:] for r in log_ratios(  # first token never counts
            model, tokenizer, [target[i] for i in fit], maps)])
        words = set(torch.cat([ids[i][positives[i]] for i in fit]).tolist())
        held_src = log_ratios(model, tokenizer, [source[i] for i in held], maps)
        held_tgt = log_ratios(model, tokenizer, [target[i] for i in held], maps)
        for q in quantiles:
            cut = float(reference.max() if q >= 1 else torch.quantile(reference, q))
            for i, ratios, softened in zip(held, held_src, held_tgt, strict=True):
                _tally(counts[q], ratios > cut, positives[i], ids[i], words,
                       bool((softened[1:] > cut).any()))  # first token never counts
    print("\n| likelihood gate, threshold quantile | seen words above | unseen words above | "
          "held-out softened texts on |")
    print("|---|---|---|---|")
    for q, c in counts.items():
        print(f"| {q:g} | {c['seen_on']}/{c['seen']} | {c['unseen_on']}/{c['unseen']} | "
              f"{c['target_on']}/{c['targets']} |")
    return [{"quantile": q, **c} for q, c in counts.items()]


if __name__ == "__main__":
    main()
