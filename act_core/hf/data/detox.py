"""Counterfactual rewrites for detoxification data: the same text with its offensive words swapped.

A map fitted from toxic texts to *other*, non-toxic texts also learns every other difference
between the two sets (topic, length, register), and applies it to everything the model reads.
A map fitted from toxic texts to the **same texts with only the offensive words replaced**
learns the difference that matters and leaves the rest of the distribution where it was.

:data:`SUBSTITUTIONS` is a hand-written table (written for this project) of offensive words and
a mild word of the same grammatical role, grouped by kind in :data:`ROLES`. Identity terms
("black", "gay", ...) that the lexical classifier also scores as offensive are deliberately
*not* in it: the maps must not learn to erase them.
"""

from __future__ import annotations

import re

__all__ = ["ROLES", "SUBSTITUTIONS", "soften"]

ROLES: dict[str, dict[str, str]] = {"expletive": {
    "fuck": "darn", "fucks": "darns", "fucking": "really", "fuckin": "really",
    "fucked": "messed", "fucker": "fellow", "fuckers": "fellows",
    "motherfucker": "fellow", "motherfuckers": "fellows", "motherfucking": "really",
    "shit": "stuff", "shits": "things", "shitty": "poor", "bullshit": "talk",
    "crap": "stuff", "crappy": "poor", "damn": "darn", "damned": "darned", "goddamn": "darn",
    "hell": "world", "piss": "bother", "pissed": "upset", "pissing": "bothering",
}, "insult": {
    "ass": "whole", "asses": "selves", "asshole": "fellow", "assholes": "fellows",
    "dumbass": "fellow", "jackass": "fellow", "bitch": "girl", "bitches": "girls",
    "bitching": "chatting", "bastard": "fellow", "bastards": "fellows", "cunt": "person",
    "cunts": "people", "dick": "hand", "dicks": "hands", "dickhead": "fellow",
    "idiot": "person", "idiots": "people", "idiotic": "odd", "moron": "person",
    "morons": "people", "moronic": "odd", "imbecile": "person", "stupid": "small",
    "dumb": "quiet", "retard": "person", "retarded": "odd", "loser": "player",
    "losers": "players", "jerk": "fellow", "jerks": "fellows", "worthless": "humble",
    "pathetic": "modest", "disgusting": "unusual", "suck": "hold", "sucks": "fails",
    "sucked": "failed", "sucking": "holding", "hoe": "friend", "hoes": "friends",
    "ho": "friend", "whore": "woman", "whores": "women", "slut": "woman", "sluts": "women",
    "thug": "man", "thugs": "men", "punk": "kid", "pig": "guy", "freak": "fan",
    "scum": "folk", "trash": "stuff", "liar": "talker", "liars": "talkers",
    "arrogant": "proud", "fat": "big", "dirty": "muddy", "butt": "back",
}, "slur": {  # replaced by the plain noun
    "nigger": "man", "niggers": "men", "nigga": "man", "niggas": "men", "faggot": "guy",
    "faggots": "guys", "fag": "guy", "fags": "guys", "dyke": "woman",
}, "sexual": {
    "cock": "arm", "cocks": "arms", "penis": "arm", "pussy": "hand", "pussies": "hands",
    "vagina": "hand", "boobs": "hair", "tits": "hair", "titties": "hair", "anal": "calm",
    "porn": "film", "porno": "film", "sex": "tea", "sexy": "tidy", "horny": "sleepy",
    "naked": "dressed", "nude": "dressed", "cum": "come", "orgasm": "nap", "balls": "hands",
    "blowjob": "favour", "rape": "call", "raped": "called", "kill": "find", "killed": "found",
    "killing": "finding",
}}
SUBSTITUTIONS: dict[str, str] = {w: soft for words in ROLES.values() for w, soft in words.items()}

_WORD = re.compile(r"[A-Za-z]+")


def _case_like(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[0].isupper():
        return word[0].upper() + word[1:]
    return word


def soften(text: str) -> str:
    """``text`` with every word of :data:`SUBSTITUTIONS` replaced (case kept)."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = SUBSTITUTIONS.get(word.lower())
        return word if new is None else _case_like(new, word)

    return _WORD.sub(swap, text)
