"""Does the choice of 64 prose passages decide issue 21's small-data comparison? (chooses nothing)

The shift-only written-pairs round put LinEAS (the issue's 32 + 32 ``toxicity:paired`` texts,
shifts only, 100 steps, strength 2.25, unbounded) 0.2 points of perplexity below Linear-AcT
(strength 1, q0.05-0.95) on the dev passages (500-563) and 1.9 points above it on the eval ones
(0-63). This refits both (deterministic) and reads their perplexity change on every set of 64
book-cloze passages at ``--offsets``: which of the two reads is the usual one?

    ACT_CACHE_DIR=/tmp/act_cache python -m benchmarks.llm_lineas_passage_sets \
        --out benchmarks/results/llm_lineas_passage_sets
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from act_core.hf import data
from act_core.hf.generate import perplexity
from benchmarks import llm_lineas_small as small
from benchmarks.llm_common import setup


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--offsets", nargs="+", type=int,
                   default=[0, 64, 128, 192, 256, 320, 384, 448, 500])
    p.add_argument("--lineas-strength", type=float, default=2.25)
    p.add_argument("--out", default="benchmarks/results/llm_lineas_passage_sets")
    opts = p.parse_args(argv)
    setup()
    args = small.parse_args(["--split", "dev", "--out", "", "--lineas-shift-only",
                             "--lineas-support", "unbounded"])
    model, tokenizer = small._load(args)
    source, target = small.toxicity_texts(args)
    held = (source[args.n: 2 * args.n], target[args.n: 2 * args.n])
    source, target = source[: args.n], target[: args.n]
    linear_act, *_ = small._fit(model, tokenizer, source, target, args.sites, "linear_act",
                                args, held)
    lineas, *_ = small._fit(model, tokenizer, source, target, args.sites, "lineas", args, held)
    passages = data.heldout_prose(100_000)
    rows = []
    for offset in opts.offsets:
        prose = passages[offset: offset + 64]
        base = perplexity(model, tokenizer, prose, None, 0.0)
        act = perplexity(model, tokenizer, prose, linear_act, 1.0, args.support)
        las = perplexity(model, tokenizer, prose, lineas, opts.lineas_strength, "unbounded")
        rows.append({"offset": offset, "base": base, "linear_act": act / base - 1,
                     "lineas": las / base - 1})
        print(json.dumps(rows[-1]), flush=True)
    Path(f"{opts.out}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
