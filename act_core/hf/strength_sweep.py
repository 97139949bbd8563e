"""How strong can a map be? Perplexity on neutral text over a grid of strengths.

The strength a language-model map can take before its text degrades differs from map to map:
on SmolLM2, concept maps fitted the same way stayed within +40% perplexity from strength 1.25
(space) to 2 (medicine), and a detoxification map costs +2.5% at strength 1
(docs/results.md). :func:`sweep_strengths` measures it on the user's own model and maps: the
perplexity of neutral passages at each strength, its change from strength 0, and the largest
strength whose change stays within a budget. With prompts it also writes one greedy
continuation per strength, so that the effect can be read beside its cost. ``act strength`` is
its command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from act_core.errors import StrengthError
from act_core.hf.generate import generate, perplexity
from act_core.hf.lm import progress_bar
from act_core.maps import TransportMap
from act_core.strength import check_strength_range

__all__ = ["DEFAULT_BUDGET", "DEFAULT_STRENGTHS", "StrengthRow", "StrengthSweep",
           "sweep_strengths"]

#: The grid a sweep measures by default (0 is always measured: the model as it is)
DEFAULT_STRENGTHS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: Default budget: the largest perplexity rise (a fraction, 0.25 = +25%) a chosen strength may cost
DEFAULT_BUDGET = 0.25


@dataclass(frozen=True)
class StrengthRow:
    """One strength of a sweep: perplexity, its change from strength 0, greedy continuations."""

    strength: float
    perplexity: float
    change: float  # perplexity / perplexity at strength 0 - 1
    continuations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StrengthSweep:
    """The rows of :func:`sweep_strengths`, the budget and the strength it suggests."""

    rows: list[StrengthRow]
    budget: float
    texts: int
    prompts: list[str]
    support: str = "minmax"

    @property
    def suggested(self) -> float | None:
        """The largest measured strength above 0 whose perplexity change is within the budget
        (None: none is)."""
        within = [r.strength for r in self.rows if r.strength > 0 and r.change <= self.budget]
        return max(within) if within else None

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "support": self.support, "texts": self.texts,
                "prompts": self.prompts,
                "suggested": self.suggested, "rows": [asdict(r) for r in self.rows]}

    def text(self) -> str:
        suggested = self.suggested
        lines = [f"perplexity of {self.texts} neutral passages by strength "
                 f"(budget: +{100 * self.budget:g}%, support: {self.support})",
                 "strength  perplexity  change"]
        for row in self.rows:
            mark = "  <- suggested" if row.strength == suggested else ""
            lines.append(f"{row.strength:8g}  {row.perplexity:10.2f}  {100 * row.change:+6.1f}%"
                         f"{mark}")
            for prompt, text in zip(self.prompts, row.continuations, strict=True):
                lines.append("          " + (prompt + text).replace("\n", "\\n"))
        if suggested is None:
            lines.append(f"no strength above 0 keeps perplexity within +{100 * self.budget:g}%: "
                         "raise the budget, try smaller strengths, or fit on closer texts")
        else:
            lines.append(f"suggested strength: {suggested:g} (the largest measured within "
                         f"the budget; read the continuations too: perplexity measures the cost, "
                         f"not the effect)")
        return "\n".join(lines)


def sweep_strengths(model: Any, tokenizer: Any, maps: Mapping[str, TransportMap],
                    texts: Sequence[str], strengths: Sequence[float] = DEFAULT_STRENGTHS,
                    support: str = "minmax", budget: float = DEFAULT_BUDGET,
                    prompts: Sequence[str] = (), max_new_tokens: int = 24,
                    batch_size: int = 8, progress: bool = False) -> StrengthSweep:
    """Perplexity of ``texts`` under ``maps`` at 0 and at every strength of ``strengths``.

    Each strength is checked as the hosts check it: within the maps' documented range
    (:func:`act_core.strength.check_strength_range`). ``prompts`` get one greedy continuation
    of ``max_new_tokens`` per strength.

    Raises
    ------
    StrengthError
        For a strength outside the maps' documented range, or a budget that is not a finite
        number >= 0.
    ValueError
        For no texts.
    """
    if not texts:
        raise ValueError("sweep_strengths needs at least one neutral text")
    if not (math.isfinite(budget) and budget >= 0):
        raise StrengthError(f"the budget is a perplexity rise >= 0 (0.25 = +25%), found {budget}")
    grid = sorted({0.0, *(check_strength_range(s, maps) for s in strengths)})
    rows: list[StrengthRow] = []
    base = None
    for strength in progress_bar(grid, len(grid), "strengths", progress):
        ppl = perplexity(model, tokenizer, texts, maps, strength, support, batch_size=batch_size)
        base = ppl if base is None else base
        outs = generate(model, tokenizer, list(prompts), maps, strength, support,
                        max_new_tokens=max_new_tokens, do_sample=False,
                        batch_size=batch_size) if prompts else []
        rows.append(StrengthRow(strength, ppl, ppl / base - 1.0, list(outs)))
    return StrengthSweep(rows, budget, len(texts), list(prompts), str(support))
