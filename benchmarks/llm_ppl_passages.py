"""Why the dev passages cost more perplexity than the eval ones: sampling noise, or other text?

Every toxicity round chose within a dev perplexity budget read on book-cloze passages 500-563
and reported the change on passages 0-63; the same maps raised the first 2.5 to 8 times as much
as the second (docs/results.md, "What the dev choices were worth"). This measures, for one map
set at one strength, the perplexity change on each set of passages with a 95% bootstrap
interval over its passages (paired: the same passages resampled at strength 0 and at the
strength). If the intervals overlap, 64 passages are simply too few; if not, the sets are
different text and a budget read on one does not carry to another. Three more sets of the same
corpus (64-127, 128-191, 256-319) say which of the two is the usual one.

Per-passage values come from the public :func:`act_core.hf.generate.perplexity` called on one
passage at a time (its token count is the tokenizer's, truncated as ``perplexity`` truncates).

    ACT_CACHE_DIR=/tmp/act_cache .venv/bin/python -m benchmarks.llm_ppl_passages \
        --out benchmarks/results/llm_ppl_passages.json
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from act_core.hf import data
from act_core.hf.generate import perplexity
from benchmarks.llm_common import finish, fit_all_at_once, load_model, setup
from benchmarks.llm_own_pairs import with_extra_pairs

MAX_LENGTH = 128  # perplexity()'s default truncation


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="toxicity:paired")
    p.add_argument("--extra-pairs", default=None, help="a folder of benchmarks/llm_own_pairs.py: "
                   "its pairs are added to --data's (as llm_toxicity.py --extra-pairs)")
    p.add_argument("--sites", default="post_norms+mlp_out+attn_out")
    p.add_argument("--method", default="linear_act")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--support", default="q0.05-0.95")
    p.add_argument("--sets", nargs="+",
                   default=["eval:0", "next:64", "next2:128", "mid:256", "dev:500"],
                   help="NAME:FIRST passage sets of --passages passages each")
    p.add_argument("--passages", type=int, default=64)
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def passage_nll(model, tokenizer, texts, maps, strength, support) -> np.ndarray:
    """(N, 2): each passage's summed token NLL and its number of predicted tokens."""
    rows = []
    for text in texts:
        tokens = min(len(tokenizer(text)["input_ids"]), MAX_LENGTH) - 1
        ppl = perplexity(model, tokenizer, [text], maps, strength, support, batch_size=1,
                         max_length=MAX_LENGTH)
        rows.append((tokens * math.log(ppl), tokens))
    return np.array(rows)


def change(base: np.ndarray, steered: np.ndarray) -> float:
    """Perplexity change of the pooled passages: exp(delta NLL / tokens) - 1."""
    return math.exp((steered[:, 0].sum() - base[:, 0].sum()) / base[:, 1].sum()) - 1


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target, data_name = with_extra_pairs(*data.load_builtin(args.data), args.data,
                                                 args.extra_pairs)
    maps = fit_all_at_once(model, tokenizer, data_name, source, target, [args.method],
                           args.sites)[args.method]
    rng = np.random.default_rng(0)
    rows = []
    for spec in args.sets:
        name, first = spec.split(":")
        first = int(first)
        texts = data.heldout_prose(first + args.passages)[first:]
        base = passage_nll(model, tokenizer, texts, None, 0.0, args.support)
        steered = passage_nll(model, tokenizer, texts, maps, args.strength, args.support)
        draws = [change(base[idx], steered[idx])
                 for idx in rng.integers(0, len(texts), (args.draws, len(texts)))]
        low, high = np.percentile(draws, [2.5, 97.5])
        each = np.exp((steered[:, 0] - base[:, 0]) / base[:, 1]) - 1
        rows.append({"set": name, "passages": f"{first}-{first + len(texts) - 1}",
                     "change %": 100 * change(base, steered), "low %": 100 * float(low),
                     "high %": 100 * float(high), "median %": 100 * float(np.median(each)),
                     "min %": 100 * float(each.min()), "max %": 100 * float(each.max())})
    return finish(args, rows, ["set", "passages", "change %", "low %", "high %", "median %",
                               "min %", "max %"])


if __name__ == "__main__":
    main()
