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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from act_core.hf.data.detox import soften
from act_core.hf.data.judges import toxicity_probability

__all__ = ["OWN_NAMES", "own_continuations", "own_toxicity_pairs", "pairs_from_continuations"]

OWN_NAMES = ("toxicity:own", "toxicity:paired+own")  # the names `act data` samples a model for


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
