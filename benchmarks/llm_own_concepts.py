"""Concept pairs from the model's own text: SmolLM2's stories about a concept, and without it.

Writes ``benchmarks/data/concept_own/{plain,story}/<concept>_pairs.tsv`` (``source<TAB>target``
per line) for the ninth concept round (``benchmarks/llm_lineas_small.py``'s docstring;
``--concept-data own_plain`` / ``own_story``). Every one of the 16 fitting openings
(:data:`act_core.hf.data.own.OWN_CONCEPT_OPENINGS`, used by no dev or eval run) is continued
once per seed (32 new tokens, the benchmarks' sampling) three ways: as it is (``plain``), after
the chat request "Write a short story." (``story``), and after "Write a short story about
TOPIC." per concept (the target). Each is recorded as ``opening + continuation``, without the
request. A pair is kept where the concept's lexicon matches the target and not the source
(:func:`act_core.hf.data.own.concept_pairs_from_texts`). The two sources share the targets, so
they are generated once.

    ACT_CACHE_DIR=/tmp/act_cache .venv/bin/python -m benchmarks.llm_own_concepts --seeds 24
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

from act_core.hf import data
from act_core.hf.data.own import (
    CONCEPT_TOPICS,
    OWN_CONCEPT_OPENINGS,
    concept_pairs_from_texts,
    own_story_texts,
)
from benchmarks.llm_common import load_model, setup

log = logging.getLogger("benchmarks")
OUT = Path(__file__).resolve().parent / "data" / "concept_own"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=24, help="continuations per opening and prompt")
    p.add_argument("--concepts", nargs="+", default=data.concept_names())
    p.add_argument("--out-dir", type=Path, default=OUT)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    seeds = range(args.seeds)
    start = time.perf_counter()

    def texts(topic, plain=False):
        out = own_story_texts(model, tokenizer, topic, seeds, OWN_CONCEPT_OPENINGS, plain=plain,
                              batch_size=args.batch_size)
        log.info("%s: %d texts, %.0f s", topic or ("plain" if plain else "story"), len(out),
                 time.perf_counter() - start)
        return out

    bases = {"plain": texts(None, plain=True), "story": texts(None)}
    summary = {}
    for concept in args.concepts:
        about = texts(CONCEPT_TOPICS[concept])
        for name, base in bases.items():
            src, tgt, counts = concept_pairs_from_texts(base, about, concept)
            folder = args.out_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            body = "".join(f"{a}\t{b}\n" for a, b in zip(src, tgt, strict=True))
            (folder / f"{concept}_pairs.tsv").write_text(body, encoding="utf-8")
            counts["digest"] = hashlib.sha256(body.encode()).hexdigest()[:8]
            summary[f"{name}/{concept}"] = counts
            log.info("%s/%s: %s", name, concept, counts)
    summary["seconds"] = time.perf_counter() - start
    (args.out_dir / "counts.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
