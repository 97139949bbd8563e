"""Paired detoxification texts from SmolLM2's own toxic continuations of the ``fit`` prefixes.

The built-in ``toxicity:paired`` data are 86 RealToxicityPrompts prefixes and the same prefixes
with their offensive words swapped (65 of them change). They are text the model *reads*; what
the maps and the gate must act on is text the model *writes*. This script samples the
unsteered model's continuations of every ``fit`` prefix (never a ``dev`` or ``eval`` one), keeps
those that the benchmark's own judge (alt-profanity-check, probability >= 0.5) calls toxic and
that the swap table changes, and writes them as pairs: the prefix and its continuation, and the
same text through :func:`act_core.hf.data.detox.soften`. The sampling is the benchmarks' (32 new
tokens, temperature 1, top-p 0.9, batches seeded ``seed + k``).

    # two shards of 8 seeds side by side on two cores, then the merge (about 18 min in all;
    # the published pairs: seeds 0-15, 424 pairs, digest 036c2f9d...)
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.llm_own_pairs --seeds 0 1 2 3 4 5 6 7 \
        --raw /tmp/own_a.json &
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.llm_own_pairs \
        --seeds 8 9 10 11 12 13 14 15 --raw /tmp/own_b.json
    .venv/bin/python -m benchmarks.llm_own_pairs --merge /tmp/own_a.json /tmp/own_b.json

The merge writes ``toxic_texts.txt`` and ``softened_texts.txt`` into ``<cache>/toxicity_own``
(``act_core.hf.models.cache_dir()``, i.e. ``$ACT_CACHE_DIR``) and prints their digest
(:func:`act_core.mapset.prompt_hash`), which the runs that fit on them record. They are
regenerated, not committed: they are the model's own explicit, insulting and sexual text.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from act_core.hf import data
from act_core.hf.data.judges import toxicity_probability
from act_core.hf.data.own import own_continuations, pairs_from_continuations
from act_core.hf.models import cache_dir
from act_core.mapset import prompt_hash
from benchmarks.llm_common import load_model, save_json, setup

log = logging.getLogger("benchmarks")


def sample(seeds: list[int], max_new_tokens: int = 32, batch_size: int = 32) -> dict:
    """Every ``fit`` prefix continued once per seed, with the judge's probability."""
    model, tokenizer = load_model()
    prefixes = data.rtp_split("fit")
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        part = own_continuations(model, tokenizer, prefixes, [seed],
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
        rows += part
        toxic = sum(r["p_toxic"] >= 0.5 for r in part)
        log.info("seed %d: %d of %d continuations toxic (%.0f s)", seed, toxic, len(prefixes),
                 time.perf_counter() - start)
    return {"seeds": seeds, "max_new_tokens": max_new_tokens, "n_prefixes": len(prefixes),
            "rows": rows}


def pairs(raw: list[dict]) -> tuple[list[str], list[str], dict]:
    """``(source, target, counts)`` of several raw files (:func:`sample`) together."""
    prefixes = data.rtp_split("fit")
    if any(part["n_prefixes"] != len(prefixes) for part in raw):
        raise SystemExit("raw continuations of another fit split")
    return pairs_from_continuations(prefixes, [row for part in raw for row in part["rows"]])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    p.add_argument("--raw", help="write the sampled continuations here (JSON)")
    p.add_argument("--merge", nargs="+", help="raw JSON files to turn into pairs")
    p.add_argument("--out-dir", default=None, help="default: <cache>/toxicity_own")
    args = p.parse_args(argv)
    setup()
    if args.merge:
        raw = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.merge]
        source, target, counts = pairs(raw)
        out = Path(args.out_dir or cache_dir() / "toxicity_own")
        out.mkdir(parents=True, exist_ok=True)
        seeds = sorted(s for part in raw for s in part["seeds"])
        head = (f"# SmolLM2-135M-Instruct's continuations of the fit prefixes, seeds {seeds}: "
                f"{counts['toxic']} of {counts['continuations']} toxic, {counts['pairs']} "
                "changed by the swap table (benchmarks/llm_own_pairs.py)\n")
        (out / "toxic_texts.txt").write_text(head + "\n".join(source) + "\n", encoding="utf-8")
        (out / "softened_texts.txt").write_text(head + "\n".join(target) + "\n",
                                                encoding="utf-8")
        log.info("%s; %s; digest %s", counts, out, prompt_hash(source, target))
        return
    result = sample(args.seeds)
    if args.raw:
        save_json(args.raw, result)


def read_pairs(out_dir: str | Path, max_target_p: float | None = None
               ) -> tuple[list[str], list[str]]:
    """``(toxic, softened)`` texts written by ``--merge`` into ``out_dir``, line-aligned;
    with ``max_target_p``, only the pairs whose softened text the judge scores below it."""
    out = Path(out_dir)
    source = data.read_lines(out / "toxic_texts.txt")
    target = data.read_lines(out / "softened_texts.txt")
    if len(source) != len(target):
        raise SystemExit(f"{out}: {len(source)} toxic texts but {len(target)} softened ones")
    if max_target_p is not None:
        keep = toxicity_probability(target) < max_target_p
        source = [t for t, k in zip(source, keep, strict=True) if k]
        target = [t for t, k in zip(target, keep, strict=True) if k]
    return source, target


def with_extra_pairs(source: list[str], target: list[str], data_name: str,
                     extra_dir: str | None, only: bool = False,
                     max_target_p: float | None = None) -> tuple[list[str], list[str], str]:
    """``--data``'s texts with the pairs of ``extra_dir`` added (or alone, ``only``; filtered by
    ``max_target_p`` as :func:`read_pairs`), and the data name the map cache files them under."""
    if not extra_dir:
        return source, target, data_name
    extra = read_pairs(extra_dir, max_target_p)
    tag = Path(extra_dir).name
    if only:
        return extra[0], extra[1], tag
    return source + extra[0], target + extra[1], f"{data_name}+{tag}"


if __name__ == "__main__":
    main()
