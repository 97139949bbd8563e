"""The strength lambda: its bounds, and its validation.

``lambda = 0`` is the model as it is, ``1`` transports fully, above 1 extrapolates along the same
line. Negative and non-finite strengths are refused (:class:`~act_core.errors.StrengthError`).
The bounds are written here once and used by the core, the hosts' checks and the node schemas:

* :data:`EXTRAPOLATION_BOUND` (2): the documented range of optimal-transport maps is
  ``[0, EXTRAPOLATION_BOUND]``; the core logs a warning once past it, the hosts refuse it.
* :data:`MAX_STRENGTH` (10): the top of the range for ``unbounded_strength`` maps (``diff_means``
  steering vectors, which have no natural scale), so the largest strength a host offers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

from .errors import StrengthError
from .maps import TransportMap

__all__ = ["EXTRAPOLATION_BOUND", "MAX_STRENGTH", "CheckedStrengths", "StrengthLike",
           "check_strength", "check_strength_range", "strength_limit"]

logger = logging.getLogger(__name__)

#: Top of the documented range of optimal-transport maps; past it a warning is logged (once per
#: process) unless the map is ``unbounded_strength``, and the hosts refuse it.
EXTRAPOLATION_BOUND = 2.0
#: Top of the range of ``unbounded_strength`` maps (diff_means): the largest strength a host offers.
MAX_STRENGTH = 10.0

StrengthLike = float | int | torch.Tensor
_warned: set[str] = set()


def _warn_extrapolation(value: float, tmap: TransportMap) -> None:
    if value > EXTRAPOLATION_BOUND and not tmap.unbounded_strength and "extrapolate" not in _warned:
        _warned.add("extrapolate")
        logger.warning("strength %.3g > %.1f extrapolates the %s map far beyond the target "
                       "distribution; outputs may degrade (this warning is shown once)",
                       value, EXTRAPOLATION_BOUND, tmap.method)


class CheckedStrengths(tuple):
    """Per-item strengths (floats) that :func:`check_strength` has validated: a caller that
    applies one (B,) strength at many sites converts and checks it once
    (:meth:`act_core.apply.TransportPlan.applied`), not at every site."""

    @classmethod
    def of(cls, strength: torch.Tensor, tmap: TransportMap) -> CheckedStrengths:
        return cls(check_strength(strength, strength.shape[0], tmap))


def check_strength(strength: StrengthLike, batch: int | None, tmap: TransportMap
                   ) -> float | list[float]:
    """Validate a strength and return it as a float or a list of B floats.

    Parameters
    ----------
    strength : float or Tensor, shape () or (B,)
    batch : int or None
        Size B of the activation's dim 0, required for per-item strengths.
    tmap : TransportMap
        The map (for the extrapolation warning).

    Raises
    ------
    StrengthError
        Non-finite or negative strength, a (B,) tensor whose length is not ``batch``.
    """
    if type(strength) is float and 0.0 <= strength <= EXTRAPOLATION_BOUND:
        return strength  # the common case, checked at every hook call (NaN fails the test)
    if type(strength) is CheckedStrengths:  # validated once for a whole forward call
        if len(strength) != batch:
            raise StrengthError(f"{len(strength)} per-item strengths for a batch of {batch}")
        return list(strength)
    if isinstance(strength, torch.Tensor):
        if strength.ndim > 1 or (strength.ndim == 1 and strength.shape[0] != batch):
            raise StrengthError(f"a strength tensor must have shape () or (B,) = ({batch},), "
                                f"found {tuple(strength.shape)}")
        values = strength.detach().to("cpu", torch.float64).reshape(-1).tolist()
    elif isinstance(strength, (int, float)) and not isinstance(strength, bool):
        values = [float(strength)]
    else:
        raise StrengthError(f"strength must be a number or a tensor, "
                            f"found {type(strength).__name__}")
    for value in values:
        if not math.isfinite(value):
            raise StrengthError(f"strength must be finite, found {value}")
        if value < 0:
            raise StrengthError(f"strength must be >= 0, found {value:g}; to transport target -> "
                                "source apply tmap.inverse() with a positive strength, or fit "
                                "with source and target swapped")
    _warn_extrapolation(max(values), tmap)
    if isinstance(strength, torch.Tensor) and strength.ndim == 1:
        return values
    return values[0]


def strength_limit(maps: Mapping[str, TransportMap]) -> float:
    """The top of the documented strength range for these maps: :data:`MAX_STRENGTH` when one
    of them is ``unbounded_strength`` (diff_means), else :data:`EXTRAPOLATION_BOUND`."""
    unbounded = any(getattr(t, "unbounded_strength", False) for t in maps.values())
    return MAX_STRENGTH if unbounded else EXTRAPOLATION_BOUND


def check_strength_range(strength: float, maps: Mapping[str, TransportMap]) -> float:
    """A host's strength, checked against the documented range for ``maps``; returned as a float.

    Raises
    ------
    StrengthError
        Outside ``[0, strength_limit(maps)]`` (also NaN), with the range in the message.
    """
    top = strength_limit(maps)
    value = float(strength)
    if not 0.0 <= value <= top:
        kind = ("diff_means (steering-vector)" if top == MAX_STRENGTH else "optimal-transport")
        raise StrengthError(f"strength {value:g} is outside the documented range [0, {top:g}] "
                            f"for {kind} maps: 0 = no change, 1 = fully transported, values "
                            "above 1 extrapolate")
    return value
