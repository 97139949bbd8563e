"""Detoxification pairs from the model's own toxic text: what it writes, not what it reads.

The built-in ``toxicity:paired`` data are RealToxicityPrompts prefixes and the same prefixes with
their offensive words swapped: text the model *reads*. A detoxification map must change text the
model *writes*. :func:`own_toxicity_pairs` samples the model's continuations of the ``fit``
prefixes (never a ``dev`` or ``eval`` one), keeps those the judge (alt-profanity-check,
probability >= 0.5) calls toxic and the swap table (:mod:`act_core.hf.data.detox`) changes, and
pairs each prefix + continuation with its softened text. On SmolLM2-135M-Instruct, 16 samples per
prefix give 424 pairs; a map fitted on them with the 86 built-in pairs removes 3.84x of the
toxic continuations at +0.87% perplexity, where the built-in pairs' map paid +3.7% for 4.06x
(docs/results.md). ``act data toxicity:own`` and ``toxicity:paired+own`` write them to files for
``act fit --source/--target``.

:func:`own_concept_pairs` does the same for concept induction: the model's own continuations of
story openings written for fitting (:data:`OWN_CONCEPT_OPENINGS`, used by no dev or eval run),
once as it writes them and once asked through its chat template for a short story about the
concept; a pair is kept where the judge's lexicon finds the concept in the second and not in the
first. Both are recorded without the request, as ``opening + continuation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from act_core.hf.data.detox import soften
from act_core.hf.data.judges import toxicity_probability

__all__ = ["CONCEPT_TOPICS", "OWN_CONCEPT_OPENINGS", "OWN_NAMES", "concept_pairs_from_texts",
           "own_concept_pairs", "own_continuations", "own_story_texts", "own_toxicity_pairs",
           "pairs_from_continuations", "topic_prompt"]

OWN_NAMES = ("toxicity:own", "toxicity:paired+own")  # the names `act data` samples a model for

#: Story openings written for fitting concept maps on the model's own text (2026-12-07); no dev
#: or eval run uses them (benchmarks/llm_lineas_small.py's openings are all different)
OWN_CONCEPT_OPENINGS = (
    "The little boat drifted toward the island where",
    "Mother opened the old wooden chest and found",
    "At the edge of the dark woods, a girl named Lena",
    "The two brothers had not spoken for years until",
    "When the snow finally melted, the villagers", "Under the bridge lived a grumpy troll who",
    "The young painter carried his brushes to", "It was the last day of summer, and Tom",
    "High in the mountains, a small monastery", "The merchant's cart broke down on the road, so",
    "Nobody in the town knew where the stranger", "The queen looked at her reflection and",
    "Late one night, the cat crept out of the house and", "The miller's daughter could spin",
    "On the hill above the village stood", "A boy found a key in the garden that",
)
#: What the request names for each built-in concept ("Write a short story about ...")
CONCEPT_TOPICS = {
    "football": "football, a match, its players and the goals",
    "space": "outer space, rockets, planets and astronauts",
    "computers": "computers, software and programming",
    "medicine": "medicine, doctors, patients and illness",
}


def own_continuations(model: Any, tokenizer: Any, prefixes: Sequence[str], seeds: Iterable[int],
                      *, max_new_tokens: int = 32, batch_size: int = 32,
                      progress: bool = False) -> list[dict]:
    """Every prefix continued once per seed (the benchmarks' sampling: temperature 1, top-p 0.9),
    as rows ``{"seed", "prefix" (its index), "continuation", "p_toxic"}``."""
    from act_core.hf.generate import generate

    rows = []
    for seed in seeds:
        texts = generate(model, tokenizer, prefixes, None, 0.0, max_new_tokens=max_new_tokens,
                         seed=seed, batch_size=batch_size, progress=progress)
        probs = toxicity_probability(texts)
        rows += [{"seed": seed, "prefix": i, "continuation": t, "p_toxic": float(p)}
                 for i, (t, p) in enumerate(zip(texts, probs, strict=True))]
    return rows


def pairs_from_continuations(prefixes: Sequence[str], rows: Iterable[dict],
                             threshold: float = 0.5) -> tuple[list[str], list[str], dict]:
    """``(toxic, softened, counts)`` from :func:`own_continuations`' rows: each toxic
    continuation that the swap table changes, as ``prefix + continuation`` on one line (white
    space collapsed) and its softened text; a text sampled twice is kept once."""
    source, target, seen = [], [], set()
    counts = {"continuations": 0, "toxic": 0, "pairs": 0}
    for row in rows:
        counts["continuations"] += 1
        if row["p_toxic"] < threshold:
            continue
        counts["toxic"] += 1
        text = " ".join((prefixes[row["prefix"]] + row["continuation"]).split())
        soft = soften(text)
        if soft == text or text in seen or text.startswith("#"):  # '#': a comment line in files
            continue
        seen.add(text)
        source.append(text)
        target.append(soft)
    counts["pairs"] = len(source)
    return source, target, counts


def own_toxicity_pairs(model: Any, tokenizer: Any, seeds: Iterable[int] = range(16),
                       prefixes: Sequence[str] | None = None, **kwargs: Any
                       ) -> tuple[list[str], list[str], dict]:
    """``(toxic, softened, counts)``: the model's own toxic continuations of ``prefixes`` (default:
    the ``fit`` RealToxicityPrompts prefixes), paired with their softened text.

    ``kwargs`` go to :func:`own_continuations` (``max_new_tokens``, ``batch_size``,
    ``progress``).
    """
    if prefixes is None:
        from act_core.hf.data import rtp_split

        prefixes = rtp_split("fit")
    rows = own_continuations(model, tokenizer, prefixes, seeds, **kwargs)
    return pairs_from_continuations(prefixes, rows)


def topic_prompt(tokenizer: Any, topic: str | None, opening: str) -> str:
    """The request "Write a short story [about TOPIC]." through the tokenizer's chat template, with
    the assistant's answer begun by ``opening`` (a plain-text request where there is no
    template)."""
    request = f"Write a short story about {topic}." if topic else "Write a short story."
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": request}],
                                             tokenize=False, add_generation_prompt=True) + opening
    return f"{request}\n\n{opening}"


def own_story_texts(model: Any, tokenizer: Any, topic: str | None, seeds: Iterable[int],
                    openings: Sequence[str] = OWN_CONCEPT_OPENINGS, *, plain: bool = False,
                    max_new_tokens: int = 32, batch_size: int = 32,
                    progress: bool = False) -> list[str]:
    """The model's continuation of every opening once per seed, asked for a short story about
    ``topic`` (None: on no topic; ``plain``: the bare opening, no request), each returned as
    ``opening + continuation`` with white space collapsed, seed-major."""
    from act_core.hf.generate import generate

    prompts = list(openings) if plain else [topic_prompt(tokenizer, topic, o) for o in openings]
    out = []
    for seed in seeds:
        conts = generate(model, tokenizer, prompts, None, 0.0, max_new_tokens=max_new_tokens,
                         seed=seed, batch_size=batch_size, progress=progress)
        out += [" ".join((o + c).split()) for o, c in zip(openings, conts, strict=True)]
    return out


def concept_pairs_from_texts(base: Sequence[str], about: Sequence[str], concept: str
                             ) -> tuple[list[str], list[str], dict]:
    """``(source, target, counts)``: ``base[i]`` -> ``about[i]`` where the lexicon finds the
    concept in ``about[i]`` and not in ``base[i]``; a target met twice is kept once."""
    from act_core.hf.data.judges import is_about

    src, tgt, seen = [], [], set()
    has_target, has_source = is_about(about, concept), is_about(base, concept)
    for a, b, ya, yb in zip(base, about, has_source, has_target, strict=True):
        if yb and not ya and b not in seen and not b.startswith("#"):
            seen.add(b)
            src.append(a)
            tgt.append(b)
    return src, tgt, {"continuations": len(about), "about": int(sum(has_target)),
                      "pairs": len(src)}


def own_concept_pairs(model: Any, tokenizer: Any, concepts: Sequence[str],
                      seeds: Iterable[int] = range(24),
                      openings: Sequence[str] = OWN_CONCEPT_OPENINGS, *,
                      source: str = "story", **kwargs: Any
                      ) -> dict[str, tuple[list[str], list[str], dict]]:
    """Per concept, ``(source, target, counts)`` from the model's own continuations of
    ``openings``, each recorded as ``opening + continuation``.

    Target: the continuation written when asked for a short story about the concept
    (:data:`CONCEPT_TOPICS`, :func:`topic_prompt`). Source, paired by opening and seed: the
    continuation asked for a short story on no topic (``source="story"``, the default: the pair
    then differs in the topic alone), or of the bare opening (``"plain"``: what the model writes
    unsteered; on SmolLM2 its maps cost more perplexity, docs/results.md). Kept as
    :func:`concept_pairs_from_texts` says. ``kwargs`` go to :func:`own_story_texts`
    (``max_new_tokens``, ``batch_size``, ``progress``).
    """
    if source not in ("plain", "story"):
        raise ValueError(f"source must be 'plain' or 'story', not {source!r}")
    unknown = [c for c in concepts if c not in CONCEPT_TOPICS]
    if unknown:
        raise ValueError(f"no topic for concepts {unknown}; use some of {sorted(CONCEPT_TOPICS)}")
    seeds = list(seeds)
    base = own_story_texts(model, tokenizer, None, seeds, openings, plain=source == "plain",
                           **kwargs)
    return {c: concept_pairs_from_texts(
                base, own_story_texts(model, tokenizer, CONCEPT_TOPICS[c], seeds, openings,
                                      **kwargs), c)
            for c in concepts}
