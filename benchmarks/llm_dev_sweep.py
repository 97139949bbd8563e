"""Choose the SmolLM2 configuration on development data only (never the eval split).

For every combination of sites x fitting x support x strength, the maps of one built-in pair are
fitted (cached under ``<cache>/llm_maps/``, ``act_core.hf.models.cache_dir()``) and measured
on data that the reported tables never use:

* perplexity on *dev prose*: the book-cloze passages ``--dev-prose-offset`` onwards (the
  reported tables use the first 64 passages);
* toxicity (``--data toxicity``): mean classifier probability and toxic fraction of sampled
  continuations of the first ``--limit`` prefixes of the RealToxicityPrompts ``dev`` split;
* concepts (``--data concept:NAME``): the fraction of continuations about the concept, for
  story openings other than the reported "Once upon a time" (``--prompts``).

Sites are a preset, optionally restricted to a range of blocks: ``attn_out``,
``post_norms[10:30]`` (blocks 10 to 29). Fitting is ``once`` (all at once, one recording),
``inc`` (incremental, one pass per site) or ``incN`` (incremental in N stages).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.llm_dev_sweep --data toxicity \
        --sites post_norms attn_out mlp_out --fits once --supports minmax --strengths 1 \
        --run tox_example

``--run NAME`` puts the rows into the one table of all runs, ``benchmarks/results/
llm_dev_sweep.csv`` (``benchmarks.sweep_table``; ``python -m benchmarks.sweep_table`` then
rewrites docs/llm_dev_sweep.md); ``--out FILE`` also writes them, with sampled examples, as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import time
from pathlib import Path

import numpy as np

from act_core import hf
from act_core.hf import data
from act_core.hf.data.judges import is_about, toxicity_probability
from act_core.hf.generate import generate, perplexity
from benchmarks import sweep_table
from benchmarks.llm_common import finish, fit_all_at_once, fit_or_load, load_model, save_json, setup

log = logging.getLogger("benchmarks")
DEV_OPENINGS = ("It was a quiet morning when", "My grandmother always told me that",
                "The day began like any other:", "Last summer, my friends and I")
#: the harder dev openings of the story runs (docs/llm.md, "Concept data in story form"): the
#: built-in maps reach far less on them than on DEV_OPENINGS, closer to "Once upon a time"
FAIRY_TALE_OPENINGS = ("Long ago, in a faraway kingdom,", "There was once a little girl who",
                       "In a small village by the sea, there lived",
                       "A long time ago, an old man")
_RANGE = re.compile(r"^(\w+)\[(\d*):(\d*)\]$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="toxicity", help="toxicity or concept:NAME")
    p.add_argument("--source-files", nargs="+", default=None,
                   help="fit from these text files (one example per line, concatenated) instead "
                   "of the built-in source; --data still names the judge")
    p.add_argument("--target-files", nargs="+", default=None, help="likewise for the target")
    p.add_argument("--add-files", action="store_true",
                   help="append the files' texts to the built-in source and target instead of "
                   "replacing them")
    p.add_argument("--sites", nargs="+", default=["post_norms", "attn_out", "mlp_out"])
    p.add_argument("--fits", nargs="+", default=["once"], help="once, inc or incN")
    p.add_argument("--supports", nargs="+", default=["minmax"])
    p.add_argument("--strengths", nargs="+", type=float, default=[1.0])
    p.add_argument("--method", default="linear_act")
    p.add_argument("--limit", type=int, default=32, help="dev prefixes (toxicity)")
    p.add_argument("--samples", type=int, default=16, help="continuations per opening (concepts)")
    p.add_argument("--prompts", nargs="+", default=list(DEV_OPENINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--dev-prose", type=int, default=16)
    p.add_argument("--dev-prose-offset", type=int, default=500)
    p.add_argument("--ppl-only", action="store_true", help="perplexity only, no generation")
    p.add_argument("--max-ppl-change", type=float, default=None,
                   help="skip generation for configurations above this perplexity change")
    p.add_argument("--skip-first-token", action="store_true",
                   help="pool each text over its tokens after the first, and leave the first "
                   "token unchanged when steering (hf.fit_lm's skip_first_token)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--run", default=None,
                   help="name of this run in benchmarks/results/llm_dev_sweep.csv (its rows "
                   "there are replaced)")
    p.add_argument("--out", default=None, help="also write the rows, with examples, as JSON")
    return p.parse_args(argv)


def site_list(model, spec: str):
    """``(preset or list of site names, cache tag)`` for ``preset`` or ``preset[a:b]``."""
    match = _RANGE.match(spec)
    if not match:
        return spec, spec
    preset, start, stop = match.group(1), match.group(2), match.group(3)
    lo, hi = int(start or 0), int(stop or 10**6)
    names = [str(s) for s in hf.lm_sites(model, preset)
             if lo <= int(re.search(r"layers\.(\d+)\.", str(s)).group(1)) < hi]
    return names, f"{preset}-{lo}-{min(hi, 999)}"


def _from_files(paths: list[str], builtin: list[str], add: bool) -> tuple[list[str], str]:
    """The texts of ``paths`` (after ``builtin`` with ``add``) and their cache-name suffix."""
    texts = [t for path in paths for t in data.read_lines(path)]
    return (builtin + texts if add else texts), "-" + "+".join(Path(p).stem for p in paths)


def fitting_data(args) -> tuple[str, list[str], list[str]]:
    """``(cache name, source texts, target texts)``: the built-in pair, the files given, or
    (``--add-files``) both."""
    source, target = data.load_builtin(args.data)
    name = args.data + ("-add" if args.add_files else "")
    if args.source_files:
        source, suffix = _from_files(args.source_files, source, args.add_files)
        name += suffix
    if args.target_files:
        target, suffix = _from_files(args.target_files, target, args.add_files)
        name += suffix
    return name, source, target


def fit_config(model, tokenizer, args, sites_spec: str, fit: str):
    name, source, target = fitting_data(args)
    sites, tag = site_list(model, sites_spec)
    if fit == "once":
        if isinstance(sites, str):
            return fit_all_at_once(model, tokenizer, name, source, target, [args.method],
                                   sites, skip_first_token=args.skip_first_token)[args.method]
        return fit_or_load(model, tokenizer, name, source, target, args.method, sites,
                           incremental=False, tag=tag, skip_first_token=args.skip_first_token)
    stages = int(fit[3:]) if fit[3:] else None
    return fit_or_load(model, tokenizer, name, source, target, args.method, sites, stages,
                       tag=tag, skip_first_token=args.skip_first_token)


def measure(model, tokenizer, args, maps, strength, support) -> dict:
    out = {}
    if args.data.startswith("toxicity"):
        prompts = data.rtp_split("dev")[: args.limit]
        probs = np.stack([toxicity_probability(generate(
            model, tokenizer, prompts, maps, strength, support, seed=seed,
            batch_size=args.batch_size)) for seed in args.seeds])  # (seeds, prompts)
        out.update({"mean_prob": float(probs.mean()), "toxic": float((probs >= 0.5).mean())})
    else:
        concept = args.data.removeprefix("concept:").removesuffix(":paired")
        texts = []
        for prompt in args.prompts:
            texts += generate(model, tokenizer, [prompt] * args.samples, maps, strength,
                              support, seed=args.seeds[0], batch_size=args.batch_size)
        out.update({"about": sum(is_about(texts, concept)) / len(texts), "example": texts[:2]})
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    prose = data.heldout_prose(args.dev_prose_offset + args.dev_prose)[args.dev_prose_offset:]
    base_ppl = perplexity(model, tokenizer, prose)
    rows = [{"sites": "-", "fit": "-", "support": "-", "strength": 0.0, "ppl": base_ppl,
             "ppl change %": 0.0}]
    if not args.ppl_only:
        rows[0].update(measure(model, tokenizer, args, None, 0.0, "minmax"))
    log.info("baseline: %s", rows[0])
    for sites_spec, fit in itertools.product(args.sites, args.fits):
        maps = fit_config(model, tokenizer, args, sites_spec, fit)
        for support, strength in itertools.product(args.supports, args.strengths):
            start = time.perf_counter()
            ppl = perplexity(model, tokenizer, prose, maps, strength, support)
            row = {"sites": sites_spec, "fit": fit, "support": support, "strength": strength,
                   "n_sites": len(maps), "ppl": ppl, "ppl change %": 100 * (ppl / base_ppl - 1)}
            skip = (args.max_ppl_change is not None
                    and row["ppl change %"] > 100 * args.max_ppl_change)
            if not (args.ppl_only or skip):
                row.update(measure(model, tokenizer, args, maps, strength, support))
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            log.info("%s", {k: v for k, v in row.items() if k != "example"})
            if args.out:
                save_json(args.out, {"args": vars(args), "rows": rows})
            if args.run:
                sweep_table.write_run(args.run, vars(args), rows)
    metric = "mean_prob" if args.data.startswith("toxicity") else "about"
    return finish(args, rows, ["sites", "fit", "support", "strength", "ppl", "ppl change %",
                               metric, "toxic" if metric == "mean_prob" else "n_sites"])


if __name__ == "__main__":
    main()
