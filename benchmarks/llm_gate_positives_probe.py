"""Two more ways to let the sequence gate see offensive words it was not fitted on: a probe for
issue 23.

The look-ahead gate reads as toxic only 45% of the toxic eval continuations: its probe learns
the swapped words of its 86 training pairs (``llm_gate_unseen_probe.py``). Two ideas, each
measured with the fitting texts and the dev rows only (no eval, no steered generation):

* ``--part context``: fit the probe on *context* positives (every source token from the first
  swapped one on, whose activations carry "an offensive word came before") instead of the
  swapped tokens alone, at threshold quantiles 1 / 0.999 / 0.995. Per reader depth x positives
  x quantile: (a) cross-validated on the pairs' two halves, the held-out toxic texts that pass
  anywhere, split by whether their swapped words are unseen in the fitting half, and the
  held-out softened texts that pass; (b) fitted on all 86 pairs, the dev proxy of
  ``llm_gate_draft_probe.py`` (recorded ``llm_gate_dev_seq3.json``): drop vs the ungated map,
  benign greedy continuations passing, development passages passing.
* ``--part paired``: a paired decision instead of a threshold. Read prompt + unsteered draft
  and prompt + steered text (same seed) and steer where the draft's peak score exceeds the
  steered text's by delta. Printed: the peak differences (in standard deviations of the target
  tokens' scores) of the held-out toxic/softened pairs (cross-validated, unseen words), of the
  dev benign greedy pairs (unsteered vs ungated) and of the dev toxic sampled pairs.

    python -m benchmarks.llm_gate_positives_probe --part context \
        --out benchmarks/results/llm_gate_positives_probe.json
    python -m benchmarks.llm_gate_positives_probe --part paired \
        --out benchmarks/results/llm_gate_paired_probe.json
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from act_core.hf import data
from act_core.hf.data.judges import toxicity_probability
from act_core.hf.gating import _positives, _token_activations, reader_site
from act_core.seqgate import fit_sequence_gate
from act_core.sites import Site
from benchmarks.llm_common import load_model, save_json, setup
from benchmarks.llm_gate_draft_probe import RECORDED

log = logging.getLogger("benchmarks")


def _context(positives: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every token from the first positive on."""
    out = []
    for mask in positives:
        ctx = torch.zeros_like(mask)
        if mask.any():
            ctx[int(mask.nonzero()[0]):] = True
        out.append(ctx)
    return out


class _Setting:
    """The fitting texts, the dev rows and the per-depth activations both parts read."""

    def __init__(self) -> None:
        self.model, self.tok = load_model()
        self.source, self.target = data.load_builtin("toxicity:paired")
        self.positives = _positives(self.tok, self.source, self.target, 64)
        self.ids = [torch.tensor(self.tok([s], truncation=True, max_length=64)["input_ids"][0][1:])
                    for s in self.source]
        half = len(self.source) // 2
        self.halves = [list(range(half)), list(range(half, len(self.source)))]
        rec = json.loads(RECORDED.read_text(encoding="utf-8"))
        self.prompts = data.rtp_split("dev")[: rec["n_prompts"]]
        self.benign = [p for p, q in zip(self.prompts, toxicity_probability(self.prompts).tolist())
                       if q < 0.5]
        self.prose = data.heldout_prose(500 + rec["args"]["ppl_texts"])[500:]
        self.none, self.ungated = rec["rows"]["none"], rec["rows"]["ungated"]
        self.toxic_none = [torch.as_tensor(toxicity_probability(s) >= 0.5)
                           for s in self.none["sampled"]]
        self.toxic_ungated = [torch.as_tensor(toxicity_probability(s) >= 0.5)
                              for s in self.ungated["sampled"]]

    def acts(self, site: Site, texts: list, max_length: int = 160) -> list[torch.Tensor]:
        return _token_activations(self.model, self.tok, texts, site, max_length)

    def held_out(self, site: str, src, tgt, positives, quantile: float = 1.0):
        """Per half: the gate fitted on the other half and its held-out pairs, each with
        whether its swapped words are unseen."""
        for fit, held in (self.halves, self.halves[::-1]):
            gate = fit_sequence_gate(site, [src[i] for i in fit], [tgt[i] for i in fit],
                                     [positives[i] for i in fit], quantile=quantile)
            words = set(torch.cat([self.ids[i][self.positives[i]] for i in fit]).tolist())
            pairs = []
            for i in held:
                swapped = set(self.ids[i][self.positives[i]].tolist())
                if swapped:
                    pairs.append((i, not (swapped & words)))
            yield fit, gate, pairs


def _peaks(gate, acts: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor([float(gate.scores(a).max()) if a.shape[0] else -1e9 for a in acts])


def _part_context(s: _Setting, depths: list[int], quantiles: list[float]) -> list[dict]:
    rows = []
    for layers in depths:
        site = reader_site(s.model, layers)
        parsed = Site.parse(site)
        src, tgt = s.acts(parsed, s.source, 64), s.acts(parsed, s.target, 64)
        sampled = [s.acts(parsed, [p + c for p, c in zip(s.prompts, seq)])
                   for seq in s.none["sampled"]]
        greedy = s.acts(parsed, [p + c for p, c in zip(s.benign, s.none["greedy"])])
        passages = s.acts(parsed, s.prose)
        n = len(s.prompts) * len(sampled)
        base = sum(int(t.sum()) for t in s.toxic_none) / n
        floor = sum(int(t.sum()) for t in s.toxic_ungated) / n
        for kind, positives in (("swapped", s.positives), ("context", _context(s.positives))):
            for q in quantiles:
                cv = dict.fromkeys(("unseen_on", "unseen", "seen_on", "seen", "softened_on",
                                    "softened"), 0)
                for _, gate, pairs in s.held_out(site, src, tgt, positives, q):
                    for i, unseen in pairs:
                        key = "unseen" if unseen else "seen"
                        cv[f"{key}_on"] += int((gate.scores(src[i]) > 0).any())
                        cv[key] += 1
                        cv["softened_on"] += int((gate.scores(tgt[i]) > 0).any())
                        cv["softened"] += 1
                gate = fit_sequence_gate(site, src, tgt, positives, quantile=q)
                toxic = sum(int(torch.where(_peaks(gate, a) > 0, u, t).sum())
                            for a, t, u in zip(sampled, s.toxic_none, s.toxic_ungated))
                rows.append({"layers": layers, "positives": kind, "quantile": q, **cv,
                             "drop_vs_ungated": (base - toxic / n) / (base - floor),
                             "benign_passing": int((_peaks(gate, greedy) > 0).sum()),
                             "benign": len(s.benign),
                             "passages_passing": int((_peaks(gate, passages) > 0).sum()),
                             "passages": len(s.prose)})
                log.info("%s", rows[-1])
    print("| reader after | positives | quantile | CV: unseen-word texts on | CV: softened on | "
          "dev drop vs ungated | dev benign greedy passing | dev passages passing |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['positives']} | {r['quantile']:g} | {r['unseen_on']}/"
              f"{r['unseen']} | {r['softened_on']}/{r['softened']} | {r['drop_vs_ungated']:.2f} "
              f"| {r['benign_passing']}/{r['benign']} | {r['passages_passing']}/"
              f"{r['passages']} |")
    return rows


def _quantiles(x: torch.Tensor) -> list[float]:
    probs = torch.tensor([0.5, 0.8, 0.9, 0.95, 1.0], dtype=x.dtype)
    return [round(float(v), 2) for v in torch.quantile(x, probs)]


def _part_paired(s: _Setting, depths: list[int]) -> list[dict]:
    rows = []
    for layers in depths:
        site = reader_site(s.model, layers)
        parsed = Site.parse(site)
        src, tgt = s.acts(parsed, s.source, 64), s.acts(parsed, s.target, 64)
        unseen = []
        for fit, gate, pairs in s.held_out(site, src, tgt, s.positives):
            sd = float(torch.cat([gate.scores(tgt[i]) for i in fit]).std())
            unseen += [(float(gate.scores(src[i]).max()) - float(gate.scores(tgt[i]).max())) / sd
                       for i, new in pairs if new]
        gate = fit_sequence_gate(site, src, tgt, s.positives)
        sd = float(torch.cat([gate.scores(t) for t in tgt]).std())

        def peaks(prompts: list, texts: list, gate=gate, parsed=parsed, sd=sd) -> torch.Tensor:
            return _peaks(gate, s.acts(parsed, [p + c for p, c in zip(prompts, texts)])) / sd

        benign = peaks(s.benign, s.none["greedy"]) - peaks(s.benign, s.ungated["greedy"])
        toxic = torch.cat([(peaks(s.prompts, a) - peaks(s.prompts, b))[t] for a, b, t in zip(
            s.none["sampled"], s.ungated["sampled"], s.toxic_none)])
        rows.append({"layers": layers, "cv_unseen_pairs": sorted(round(d, 2) for d in unseen),
                     "dev_benign_greedy_q50_80_90_95_100": _quantiles(benign),
                     "dev_toxic_sampled": sorted(round(float(d), 2) for d in toxic)})
        log.info("%s", rows[-1])
    for r in rows:
        unseen, toxic = torch.tensor(r["cv_unseen_pairs"]), torch.tensor(r["dev_toxic_sampled"])
        print(f"reader after {r['layers']}: benign greedy differences q50/80/90/95/max "
              f"{r['dev_benign_greedy_q50_80_90_95_100']}; above the benign q90 "
              f"({r['dev_benign_greedy_q50_80_90_95_100'][2]}): CV unseen-word pairs "
              f"{int((unseen > r['dev_benign_greedy_q50_80_90_95_100'][2]).sum())}/{len(unseen)},"
              f" dev toxic "
              f"{int((toxic > r['dev_benign_greedy_q50_80_90_95_100'][2]).sum())}/{len(toxic)}; "
              f"dev toxic with no difference (peak in the prompt): {int((toxic == 0).sum())}")
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("context", "paired"), required=True)
    p.add_argument("--layers", nargs="+", type=int, default=None)
    p.add_argument("--quantiles", nargs="+", type=float, default=[1, 0.999, 0.995])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    setting = _Setting()
    if args.part == "context":
        rows = _part_context(setting, args.layers or [2, 4, 6, 8], args.quantiles)
    else:
        rows = _part_paired(setting, args.layers or [2, 4, 6])
    result = {"recorded": RECORDED.name, "part": args.part, "rows": rows}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
