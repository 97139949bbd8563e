"""Concept induction on SmolLM2-135M-Instruct: "Once upon a time" continuations about a concept.

For each concept, maps are fitted from the project's neutral sentences (source) to its sentences
about the concept (target), on the ``attn_out`` sites by default (chosen on development
openings with ``llm_dev_sweep.py``). Sampled continuations (32 new
tokens) of "Once upon a time" are judged by the concept's fixed lexicon
(:mod:`act_core.hf.data.judges`: at least one whole-word match); the perplexity of the steered
model is measured on held-out neutral prose.

    nice -n 19 .venv/bin/python -m benchmarks.llm_concepts --samples 64 \
        --out benchmarks/results/llm_concepts.json
"""

from __future__ import annotations

import argparse
import logging

from act_core.hf import data
from act_core.hf.data.judges import is_about
from act_core.hf.generate import generate, perplexity
from benchmarks.llm_common import finish, fit_all_at_once, fit_or_load, load_model, setup

log = logging.getLogger("benchmarks")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concepts", nargs="+", default=data.concept_names())
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--samples", type=int, default=64, help="continuations per strength")
    p.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    p.add_argument("--support", default="unbounded")
    p.add_argument("--method", default="linear_act")
    p.add_argument("--sites", default="attn_out")
    p.add_argument("--stages", type=int, default=6,
                   help="incremental stages (default 6; 0: one per site)")
    p.add_argument("--all-at-once", action="store_true",
                   help="fit from one recording (2 passes) instead of incrementally")
    p.add_argument("--skip-first-token", action="store_true",
                   help="fit without each text's first token and leave it unchanged when "
                        "steering (hf.fit_lm's skip_first_token)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ppl-texts", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    prose = data.heldout_prose(args.ppl_texts)
    base_ppl = perplexity(model, tokenizer, prose)
    rows, examples = [], {}
    for concept in args.concepts:
        source, target = data.load_builtin(f"concept:{concept}")
        if args.all_at_once:
            maps = fit_all_at_once(model, tokenizer, f"concept:{concept}", source, target,
                                   [args.method], args.sites,
                                   skip_first_token=args.skip_first_token)[args.method]
        else:
            maps = fit_or_load(model, tokenizer, f"concept:{concept}", source, target,
                               args.method, args.sites, args.stages or None,
                               skip_first_token=args.skip_first_token)
        for strength in args.strengths:
            texts = generate(model, tokenizer, [args.prompt] * args.samples, maps, strength,
                             args.support, max_new_tokens=args.max_new_tokens, seed=args.seed,
                             batch_size=args.batch_size)
            about = sum(is_about(texts, concept)) / len(texts)
            ppl = base_ppl if strength == 0 else perplexity(model, tokenizer, prose, maps,
                                                            strength, args.support)
            rows.append({"concept": concept, "strength": strength, "about %": 100 * about,
                         "ppl": ppl, "ppl change %": 100 * (ppl / base_ppl - 1)})
            examples[f"{concept}@{strength:g}"] = texts[:4]
            log.info("%s @ %g: %.1f%% about, ppl %.2f", concept, strength, 100 * about, ppl)
    return finish(args, rows, ["concept", "strength", "about %", "ppl", "ppl change %"],
                  examples=examples)


if __name__ == "__main__":
    main()
