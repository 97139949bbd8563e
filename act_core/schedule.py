"""The settings of applying maps while a sampler runs: strength, range of the schedule, CFG half.

A host validates what its user gave once, at its edge, into one :class:`ApplySettings` (its one
validating constructor is :meth:`ApplySettings.checked`), and reads everything from it at every
model call:

* ``strength`` lambda, within the documented range for the maps (:mod:`act_core.strength`);
* ``start_percent`` .. ``end_percent``: the part of the sampling schedule where the maps act
  (0 = first step, 1 = last), as ``progress`` is given to
  :func:`act_core.apply.apply_transport` for maps with timestep ranges;
* ``apply_to``: which half of a classifier-free-guidance batch is transported. Hosts that batch
  the conditional and unconditional passes together say, per call, which chunk of the batch is
  which (ComfyUI's ``cond_or_uncond``: 0 = conditional, 1 = unconditional);
  :meth:`ApplySettings.per_item` turns that into the strength per batch item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .maps import TransportMap
from .strength import check_strength, check_strength_range

__all__ = ["APPLY_TO", "ApplySettings", "cfg_strengths"]

#: Which items of a CFG batch are transported.
APPLY_TO = ("both", "conditional", "unconditional")


def cfg_strengths(strength: float, apply_to: str, cond_or_uncond: Sequence[int] | None,
                  batch: int) -> float | torch.Tensor:
    """The strength per batch item when only one CFG half is transported.

    Parameters
    ----------
    strength : float
    apply_to : one of :data:`APPLY_TO`
    cond_or_uncond : sequence of int, or None
        The chunks of the batch, in order: 0 = conditional, 1 = unconditional (None or empty:
        one unlabelled batch, transported whole).
    batch : int
        B, the size of the model call's batch (equal chunks).

    Returns
    -------
    float when every item gets the same strength, else a (B,) float32 tensor.
    """
    if apply_to == "both" or not cond_or_uncond:
        return strength
    wanted = 0 if apply_to == "conditional" else 1
    chunk = batch // len(cond_or_uncond)
    values = [strength if c == wanted else 0.0 for c in cond_or_uncond]
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, dtype=torch.float32).repeat_interleave(chunk)  # (B,)


@dataclass(frozen=True)
class ApplySettings:
    """Strength, schedule range and CFG half, validated once (:meth:`checked`).

    Attributes
    ----------
    strength : float
        lambda >= 0, within the documented range for the maps.
    start_percent, end_percent : float
        0 <= start <= end <= 1: the part of the schedule where the maps act.
    apply_to : str
        One of :data:`APPLY_TO`.
    """

    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    apply_to: str = "both"

    @classmethod
    def checked(cls, maps: Mapping[str, TransportMap], strength: float = 1.0,
                start_percent: float = 0.0, end_percent: float = 1.0, apply_to: str = "both",
                label: str = "", limit: bool = True) -> ApplySettings:
        """Validate a host's inputs into settings.

        ``limit=False`` is for library calls, which keep :func:`act_core.apply_transport`'s
        rule: any finite strength >= 0, with a warning (once) past the documented range.

        Raises
        ------
        StrengthError
            A strength outside ``[0, strength_limit(maps)]`` (with ``limit=False``: a negative
            or non-finite one).
        ValueError
            A range that is not ``0 <= start_percent <= end_percent <= 1``, an unknown
            ``apply_to``. With ``label``, messages start with it (e.g. a slider's name).
        """
        prefix = f"{label}: " if label else ""
        try:
            if limit:
                value = check_strength_range(strength, maps)
            else:
                value = float(strength)
                for tmap in maps.values():
                    check_strength(value, None, tmap)
        except ValueError as err:
            raise type(err)(prefix + str(err)) from None
        if not 0.0 <= start_percent <= end_percent <= 1.0:
            raise ValueError(f"{prefix}need 0 <= start_percent <= end_percent <= 1, got "
                             f"{start_percent} and {end_percent}")
        if apply_to not in APPLY_TO:
            raise ValueError(f"{prefix}apply_to must be one of {APPLY_TO}, got {apply_to!r}")
        return cls(value, float(start_percent), float(end_percent), apply_to)

    @property
    def whole_schedule(self) -> bool:
        """True when the maps act on every step."""
        return self.start_percent == 0.0 and self.end_percent == 1.0

    def active(self, progress: float) -> bool:
        """Whether the maps act at ``progress`` (0 = first step, 1 = last)."""
        return self.start_percent <= progress <= self.end_percent

    def per_item(self, cond_or_uncond: Sequence[int] | None, batch: int,
                 strength: float | None = None) -> float | torch.Tensor:
        """The strength (or ``strength``, e.g. scaled by a curve) per item of a model call's
        batch: a float, or a (B,) tensor when one CFG half only is transported."""
        value = self.strength if strength is None else strength
        return cfg_strengths(value, self.apply_to, cond_or_uncond, batch)
