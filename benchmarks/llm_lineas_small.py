"""LinEAS against Linear-AcT on SmolLM2 toxicity, both fitted on the SAME 32 + 32 texts.

The first ``--n`` source texts of the built-in pair (default ``toxicity:paired``: toxic fit
prefixes -> the same with offensive words swapped) and their ``--n`` targets; the sites and
support of the reported configuration (docs/llm.md); evaluation exactly as
``benchmarks/llm_toxicity.py`` (same function): toxic fraction of the continuations of the
split's prefixes, perplexity on held-out prose. Dev split by default (choices are made there).

    nice -n 19 .venv/bin/python -m benchmarks.llm_lineas_small --split dev --limit 120
"""

from __future__ import annotations

import argparse
import logging
import time

from act_core import data, hf
from act_core.lineas import LineasConfig
from benchmarks.llm_common import _presets, load_model, markdown_table, save_json, setup
from benchmarks.llm_toxicity import evaluate

log = logging.getLogger("benchmarks")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=("dev", "eval"), default="dev")
    p.add_argument("--n", type=int, default=32, help="source and target texts (default 32)")
    p.add_argument("--limit", type=int, default=None, help="first N prefixes of the split")
    p.add_argument("--data", default="toxicity:paired")
    p.add_argument("--sites", default="post_norms+mlp_out+attn_out")
    p.add_argument("--support", default="q0.05-0.95")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--lineas-steps", type=int, default=100)
    p.add_argument("--lineas-batch", type=int, default=8)
    p.add_argument("--lineas-lr", type=float, default=0.1)
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ppl-texts", type=int, default=64)
    p.add_argument("--ppl-offset", type=int, default=None)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    prompts = data.rtp_split(args.split)[: args.limit]
    source, target = data.load_builtin(args.data)
    source, target = source[: args.n], target[: args.n]
    sites = _presets(args.sites)
    base = evaluate(model, tokenizer, prompts, None, 0.0, args)
    rows = [{"method": "none", **base, "fit_seconds": 0.0}]
    config = LineasConfig(steps=args.lineas_steps, batch_size=args.lineas_batch,
                          lr=args.lineas_lr, group=args.sparsity)
    for method in ("linear_act", "lineas"):
        start = time.perf_counter()
        maps = hf.fit_lm(model, tokenizer, source, target, sites, method=method,
                         incremental=False, lineas=config)
        seconds = time.perf_counter() - start
        res = evaluate(model, tokenizer, prompts, maps, args.strength, args)
        res["reduction"] = base["toxic"] / res["toxic"] if res["toxic"] > 0 else None
        res["ppl_change"] = res["ppl"] / base["ppl"] - 1.0
        rows.append({"method": method, **res, "fit_seconds": seconds})
        log.info("%s: %.4f toxic, ppl %+.1f%%, fit %.0f s", method, res["toxic"],
                 100 * res["ppl_change"], seconds)
    table = markdown_table(
        [{**r, "toxic %": 100 * r["toxic"], "ppl change %": 100 * r.get("ppl_change", 0.0),
          "reduction": r.get("reduction") or "-"} for r in rows],
        ["method", "toxic %", "reduction", "ppl", "ppl change %", "fit_seconds"])
    print(table)
    result = {"args": vars(args), "n_prompts": len(prompts), "rows": rows, "table": table}
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
