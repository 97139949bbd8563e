"""Transparent judges for generated text: a toxicity classifier and per-concept lexicons.

No language-model judge is available offline, so "is this continuation about the concept?" is
answered by a fixed word list per concept, written before any result was seen: a continuation is
*about* the concept when it contains at least ``min_hits`` whole-word (case-insensitive) matches of
the concept's lexicon. The lists avoid words common in fairy tales ("star", "moon", "ball", "sky",
"game", "team", "goal", "match", "coach", "space") so that the test does not fire on ordinary
stories.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from act_core.hf.data._common import DataUnavailableError, package_dir

__all__ = ["CONCEPT_LEXICONS", "concept_hits", "is_about", "is_toxic", "toxicity_probability"]

CONCEPT_LEXICONS: dict[str, tuple[str, ...]] = {
    "football": (
        "football", "footballer", "footballers", "soccer", "goalkeeper", "goalkeepers",
        "striker", "strikers", "midfielder", "midfielders", "defender", "defenders", "referee",
        "penalty", "penalties", "offside", "stadium", "league", "goalpost", "crossbar",
        "world cup", "premier league", "corner kick", "free kick", "winger", "hat-trick",
        "scored a goal", "kicked the ball", "football pitch", "football team", "football club",
        "centre-back", "centre-forward", "half-time", "goal kick", "goal line", "goalless",
        "penalty area",
    ),
    "space": (
        "outer space", "spacecraft", "spaceship", "spacewalk", "rocket", "rockets", "astronaut",
        "astronauts", "cosmonaut", "planet", "planets", "galaxy", "galaxies", "orbit", "orbiting",
        "telescope", "mars", "martian", "jupiter", "saturn", "neptune", "venus", "asteroid",
        "comet", "nebula", "solar system", "space station", "nasa", "satellite", "launch pad",
        "black hole", "astronomer", "astronomers", "telescopes", "spaceport", "supernova",
        "meteor", "meteors", "pluto", "deep space", "mission control",
    ),
    # computers and medicine were added on 2026-12-02, their lexicons written before any
    # continuation was generated for them (words common in stories, such as "screen",
    # "mouse", "robot", "code", "medicine" or "ill", are left out)
    "computers": (
        "computer", "computers", "laptop", "laptops", "software", "internet", "website",
        "websites", "smartphone", "smartphones", "keyboard", "keyboards", "programmer",
        "programmers", "programming", "app", "apps", "email", "emails", "online", "digital",
        "algorithm", "algorithms", "database", "databases", "wifi", "wi-fi", "download",
        "downloaded", "downloads", "password", "passwords", "browser", "server", "servers",
        "processor", "hard drive", "operating system", "spreadsheet", "coding", "source code",
        "cybersecurity", "hacker", "hackers", "artificial intelligence", "video game",
        "video games", "social media", "usb", "router", "chatbot", "data", "technology",
        "microchip", "silicon",
    ),
    "medicine": (
        "doctor", "doctors", "hospital", "hospitals", "nurse", "nurses", "patient", "patients",
        "disease", "diseases", "symptom", "symptoms", "vaccine", "vaccines", "surgery",
        "surgeon", "surgeons", "diagnosis", "diagnosed", "treatment", "treatments", "clinic",
        "clinics", "prescription", "prescribed", "antibiotic", "antibiotics", "infection",
        "infections", "blood pressure", "diabetes", "cancer", "therapy", "pharmacy",
        "pharmacist", "virus", "bacteria", "immune system", "x-ray", "medication",
        "medications", "physician", "physicians", "health care", "healthcare", "medical",
        "chronic", "vaccination",
    ),
}


def _patterns(concept: str) -> re.Pattern[str]:
    if concept not in CONCEPT_LEXICONS:
        known = sorted(CONCEPT_LEXICONS)
        raise DataUnavailableError(f"no lexicon for concept {concept!r}; known: {known}")
    words = sorted(CONCEPT_LEXICONS[concept], key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def concept_hits(texts: Sequence[str], concept: str) -> list[int]:
    """Number of lexicon matches of ``concept`` in each text, shape (len(texts),)."""
    pattern = _patterns(concept)
    return [len(pattern.findall(t)) for t in texts]


def is_about(texts: Sequence[str], concept: str, min_hits: int = 1) -> list[bool]:
    """Whether each text is about ``concept``: at least ``min_hits`` lexicon matches."""
    return [h >= min_hits for h in concept_hits(texts, concept)]


def toxicity_probability(texts: Sequence[str]) -> np.ndarray:
    """Probability of offensive language per text (alt-profanity-check), shape (len(texts),).

    Raises
    ------
    DataUnavailableError
        When ``alt-profanity-check`` is not installed (fix: ``scripts/setup_env.sh --with-llm``).
    """
    package_dir("profanity_check", "scripts/setup_env.sh --with-llm "
                "(pip install alt-profanity-check==1.9.1)")
    from profanity_check import predict_prob

    if len(texts) == 0:
        return np.zeros(0)
    return np.asarray(predict_prob(list(texts)), dtype=np.float64)


def is_toxic(texts: Sequence[str], threshold: float = 0.5) -> list[bool]:
    """Whether the classifier calls each text toxic (probability >= ``threshold``)."""
    return [bool(p >= threshold) for p in toxicity_probability(texts)]
