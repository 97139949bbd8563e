"""``act data``: list the built-in text pairs, or write one (or the model's own pairs) to files."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_data_parser", "cmd_data"]


def add_data_parser(sub, add_model) -> None:
    """The ``data`` subcommand's parser (``add_model`` adds the shared ``--model``)."""
    data = sub.add_parser(
        "data", help="list the built-in text pairs, or write one to files",
        description="List the built-in text pairs, or write one to SOURCE.txt and TARGET.txt. "
                    "toxicity:own and toxicity:paired+own sample --model first: its own toxic "
                    "continuations of the fit prefixes, each paired with its offensive words "
                    "swapped (alone, or added to toxicity:paired); concept:NAME:own samples its "
                    "stories with and without the concept. Fit on them with "
                    "'act fit --source source.txt --target target.txt'.")
    data.add_argument("name", nargs="?", help="a built-in pair to export (e.g. toxicity)")
    data.add_argument("--out-dir", type=Path, default=Path("."),
                      help="where 'act data NAME' writes source.txt and target.txt")
    add_model(data)
    data.add_argument("--own-seeds", type=int, default=None, metavar="N",
                      help="the own pairs: continuations sampled per fit prefix or opening "
                           "(default 16 for toxicity: 424 pairs on SmolLM2, about 16 minutes on "
                           "2 CPU cores; 24 for a concept: 150-190 pairs, about 5 minutes)")
    data.add_argument("--own-source", choices=("story", "plain"), default="story",
                      help="concept:NAME:own: the source is the model's story on no topic "
                           "(story, default: on SmolLM2 it cost less perplexity for as much "
                           "concept) or its continuation of the bare opening (plain)")
    data.add_argument("--own-prefixes", type=int, default=None, metavar="N",
                      help="the own pairs: continue only the first N fit prefixes (default: "
                           "all 293) or story openings (default: all 16)")


def cmd_data(args: argparse.Namespace) -> int:
    """Run ``act data``: list the pairs, or write one to ``--out-dir``."""
    from act_core.hf import data
    from act_core.hf.data.own import CONCEPT_TOPICS, OWN_NAMES

    own_concepts = [f"concept:{c}:own" for c in CONCEPT_TOPICS]
    if not args.name:
        for name in data.builtin_names():
            print(name)
        for name in (*OWN_NAMES, *own_concepts):
            print(f"{name}  (samples --model first)")
        return 0
    if args.name in OWN_NAMES:
        source, target = _own_pairs(args)
    elif args.name in own_concepts:
        source, target = _own_concept(args, args.name.split(":")[1])
    else:
        source, target = data.load_builtin(args.name)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for label, texts in (("source", source), ("target", target)):
        (args.out_dir / f"{label}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    print(f"wrote {len(source)} source and {len(target)} target examples to {args.out_dir}")
    return 0


def _own_pairs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``act data toxicity:own`` / ``toxicity:paired+own``: sample the model, then pair."""
    from act_core import hf
    from act_core.hf import data
    from act_core.hf.data.own import own_toxicity_pairs

    seeds = _seeds(args, 16)
    prefixes = data.rtp_split("fit")[: args.own_prefixes]
    model, tokenizer = hf.load_causal_lm(args.model)
    source, target, counts = own_toxicity_pairs(model, tokenizer, range(seeds),
                                                prefixes, progress=True)
    print(f"{args.model}: {counts['toxic']} of {counts['continuations']} continuations of "
          f"{len(prefixes)} fit prefixes are toxic; {counts['pairs']} change under the swap table")
    if not source:
        raise SystemExit("act data: no toxic continuation that the swap table changes; sample "
                         "more (--own-seeds, --own-prefixes)")
    if args.name == "toxicity:paired+own":
        paired = data.load_builtin("toxicity:paired")
        source, target = paired[0] + source, paired[1] + target
    return source, target


def _seeds(args: argparse.Namespace, default: int) -> int:
    seeds = default if args.own_seeds is None else args.own_seeds
    if seeds < 1 or (args.own_prefixes is not None and args.own_prefixes < 1):
        raise SystemExit("act data: --own-seeds and --own-prefixes must be at least 1")
    return seeds


def _own_concept(args: argparse.Namespace, concept: str) -> tuple[list[str], list[str]]:
    """``act data concept:NAME:own``: the model's stories about the concept against its stories
    on no topic (or plain continuations) of the same openings."""
    from act_core import hf
    from act_core.hf.data.own import OWN_CONCEPT_OPENINGS, own_concept_pairs

    seeds = _seeds(args, 24)
    openings = OWN_CONCEPT_OPENINGS[: args.own_prefixes]
    model, tokenizer = hf.load_causal_lm(args.model)
    source, target, counts = own_concept_pairs(model, tokenizer, [concept], range(seeds),
                                               openings, source=args.own_source,
                                               progress=True)[concept]
    print(f"{args.model}: {counts['about']} of {counts['continuations']} stories asked about "
          f"{concept} ({len(openings)} openings) name it; {counts['pairs']} pair with a "
          f"{args.own_source} continuation of the same opening that does not")
    if not source:
        raise SystemExit(f"act data: no story about {concept} paired; sample more "
                         "(--own-seeds, --own-prefixes)")
    return source, target
