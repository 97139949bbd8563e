"""``act strength``: which strength can a map file take? (:mod:`act_core.hf.strength_sweep`)"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from act_core.support import FROM_MAPS, check_support_choice, resolve_support

__all__ = ["add_strength_parser", "cmd_strength"]


def add_strength_parser(sub, add_model) -> None:
    """The ``strength`` subcommand's parser (``add_model`` adds the shared ``--model``)."""
    from act_core.hf.strength_sweep import DEFAULT_BUDGET, DEFAULT_STRENGTHS

    p = sub.add_parser(
        "strength", help="measure perplexity over strengths and suggest one within a budget",
        description="Perplexity of neutral passages with a map file applied at each strength, "
                    "its change from strength 0, and the largest strength within --budget. "
                    "With --prompt, one greedy continuation per strength beside it. The cost "
                    "differs from map to map (on SmolLM2, concept maps stayed within +40% from "
                    "strength 1.25 to 2), so measure it on your model before choosing.")
    add_model(p)
    p.add_argument("--maps", type=Path, required=True, help="map file from 'act fit'")
    p.add_argument("--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS),
                   help="strengths to measure; 0 is always measured (default: %(default)s)")
    p.add_argument("--budget", type=float, default=100 * DEFAULT_BUDGET,
                   help="largest perplexity rise for the suggestion, in %% (default: %(default)g)")
    p.add_argument("--support", default=FROM_MAPS,
                   help="as in 'act generate': 'from maps' (default: the file's recorded "
                        "support), minmax, unbounded (induction), q0.05-0.95")
    p.add_argument("--texts", type=Path,
                   help="neutral passages, one per line (default: passages of the built-in "
                        "held-out prose, spread over the whole set)")
    p.add_argument("--num-texts", type=int, default=32,
                   help="how many passages to read (default: %(default)s)")
    p.add_argument("--prompt", action="append", default=[],
                   help="a prompt continued greedily at every strength (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--json", action="store_true", help="print the sweep as one JSON object")


def _texts(args: argparse.Namespace) -> list[str]:
    from act_core.hf import data

    if args.num_texts < 1:
        raise SystemExit("act strength: --num-texts must be at least 1")
    if args.texts is None:
        return data.spread_prose(args.num_texts)
    if not args.texts.is_file():
        raise SystemExit(f"act strength: no such file: {args.texts}")
    texts = data.read_lines(args.texts)[: args.num_texts]
    if not texts:
        raise SystemExit(f"act strength: {args.texts} holds no text lines")
    return texts


def cmd_strength(args: argparse.Namespace) -> int:
    from act_core import hf
    from act_core.hf.strength_sweep import sweep_strengths

    if not args.budget >= 0:  # in the flag's unit (%); the core checks its fraction too
        raise SystemExit(f"act strength: --budget is a perplexity rise in %, >= 0 (25 = +25%), "
                         f"found {args.budget:g}")
    texts = _texts(args)
    check_support_choice(args.support)  # a typo fails here, before the model loads
    model, tokenizer = hf.load_causal_lm(args.model)
    maps = hf.load_lm_maps(args.maps, model)
    support = resolve_support(args.support, [maps.support])
    sweep = sweep_strengths(model, tokenizer, maps, texts, args.strengths, support,
                            args.budget / 100, args.prompt, args.max_new_tokens,
                            progress=sys.stderr.isatty())
    print(json.dumps(sweep.as_dict()) if args.json else sweep.text())
    return 0
