"""Where a map is applied: the support, chosen at apply time without refitting.

* ``"minmax"`` (default): ``lo <= x <= hi``, the source minimum and maximum (the paper's Q_o),
  suited to *mitigation* (toxicity, concept removal);
* ``"unbounded"``: everywhere (the paper's Q_inf), suited to *induction* (adding a style);
* ``"q0.05-0.95"`` or ``(0.05, 0.95)``: between two stored source quantiles; both levels must be
  in the map's ``quantile_levels``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import SupportError
from .maps import QUANTILE_LEVELS, TransportMap

__all__ = ["FROM_MAPS", "SUPPORT_CHOICES", "Support", "SupportLike", "check_support_choice",
           "is_from_maps", "parse_support", "resolve_support", "support_bounds"]

_QUANTILE = re.compile(r"^q\s*([0-9]*\.?[0-9]+)\s*-\s*([0-9]*\.?[0-9]+)$")
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Support:
    """A support choice.

    Parameters
    ----------
    kind : str
        ``"minmax"``, ``"unbounded"`` or ``"quantile"``.
    q_lo, q_hi : float
        Quantile levels for ``kind == "quantile"`` (``0 <= q_lo < q_hi <= 1``); ignored otherwise.
    """

    kind: str = "minmax"
    q_lo: float = 0.0
    q_hi: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("minmax", "unbounded", "quantile"):
            raise SupportError(f"support kind must be 'minmax', 'unbounded' or 'quantile', "
                               f"found {self.kind!r}")
        if self.kind == "quantile" and not (0.0 <= self.q_lo < self.q_hi <= 1.0):
            raise SupportError(f"quantile support needs 0 <= q_lo < q_hi <= 1, "
                               f"found ({self.q_lo}, {self.q_hi})")

    def __str__(self) -> str:
        if self.kind == "quantile":
            return f"q{self.q_lo:g}-{self.q_hi:g}"
        return self.kind


SupportLike = Support | str | tuple[float, float]

#: Ready-made choices for a host's combo box; any ``"qLO-HI"`` of stored levels also works.
SUPPORT_CHOICES: tuple[str, ...] = ("minmax", "unbounded", "q0.01-0.99", "q0.05-0.95",
                                    "q0.1-0.9")


def parse_support(spec: SupportLike) -> Support:
    """Parse ``"minmax"``, ``"unbounded"``, ``"q0.05-0.95"``, ``(0.05, 0.95)`` or a Support.

    Raises
    ------
    SupportError
        If the specification cannot be parsed.
    """
    if isinstance(spec, Support):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        q_lo, q_hi = (float(q) for q in spec)
        if math.isnan(q_lo) or math.isnan(q_hi):
            raise SupportError("quantile levels must be numbers, found NaN")
        return Support("quantile", q_lo, q_hi)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("minmax", "min-max", "q_o"):
            return Support("minmax")
        if text in ("unbounded", "none", "q_inf"):
            return Support("unbounded")
        match = _QUANTILE.match(text)
        if match:
            return Support("quantile", float(match.group(1)), float(match.group(2)))
    raise SupportError(f"cannot parse support {spec!r}; use 'minmax', 'unbounded' or "
                       f"'qLO-HI' with stored levels such as 'q0.05-0.95' (levels: "
                       f"{list(QUANTILE_LEVELS)})")


#: The choice that defers to what each map file records (``act fit --support``, the learn node).
FROM_MAPS = "from maps"


def is_from_maps(choice: str) -> bool:
    """Whether ``choice`` defers to the map files (``"from maps"``, any case and spacing)."""
    return " ".join(choice.split()).lower() == FROM_MAPS


def check_support_choice(choice: str) -> None:
    """Fail on a support choice that can be neither ``"from maps"`` nor parsed, before any work.

    Raises
    ------
    SupportError
        If ``choice`` is not ``"from maps"`` and cannot be parsed.
    """
    if not is_from_maps(choice):
        parse_support(choice)


def resolve_support(choice: str, recorded: Sequence[str]) -> str:
    """The support to apply: ``choice``, or with ``"from maps"`` the one the map sets record.

    ``recorded`` holds each map set's recorded support (``MapSet.support``); none recorded
    means ``"minmax"``. Sets that record different supports cannot share one application.

    Raises
    ------
    SupportError
        If ``choice`` cannot be parsed, or the sets record different supports.
    """
    if not is_from_maps(choice):
        parse_support(choice)
        return choice
    distinct = list(dict.fromkeys(str(parse_support(s)) for s in recorded))
    if len(distinct) > 1:
        raise SupportError(f"the map files record different supports ({', '.join(distinct)}) "
                           "and are applied with one; choose it with --support")
    return distinct[0] if distinct else "minmax"


def _level_index(levels: tuple[float, ...], level: float) -> int:
    for index, stored in enumerate(levels):
        if abs(stored - level) <= _TOLERANCE:
            return index
    raise SupportError(f"quantile level {level:g} is not stored in this map; stored levels are "
                       f"{list(levels)}")


def support_bounds(tmap: TransportMap, support: SupportLike
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return the per-unit bounds ``(lo, hi)``, each of shape (D,), or None when unbounded.

    Raises
    ------
    SupportError
        If the specification is invalid or names a quantile level the map does not store.
    """
    choice = parse_support(support)
    if choice.kind == "unbounded":
        return None
    if choice.kind == "minmax":
        return tmap.lo, tmap.hi
    levels = tmap.quantile_levels
    lo_row = _level_index(levels, choice.q_lo)
    hi_row = _level_index(levels, choice.q_hi)
    return tmap.quantiles[lo_row], tmap.quantiles[hi_row]
