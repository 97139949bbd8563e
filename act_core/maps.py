"""The fitted transport map of one site: plain data, no behaviour beyond validation.

A :class:`TransportMap` holds, for every unit ``j`` of a site, the 1-D affine map
``T_j(x) = scale[j] * x + shift[j]`` together with statistics of the source sample that define
where the map is applied (its *support*): the minimum ``lo``, the maximum ``hi`` and the
quantiles at the fixed levels :data:`QUANTILE_LEVELS`, so that a quantile support can be chosen at
apply time without refitting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .errors import MapError
from .gate import Gate

__all__ = ["MODES", "QUANTILE_LEVELS", "TransportMap"]

#: Levels at which the source quantiles are stored, shape (K,) = (13,).
QUANTILE_LEVELS: tuple[float, ...] = (
    0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 1.0,
)

#: How a map is applied to a site's output.
#: ``tokens``: elementwise on every token of a (B, T, D) output (also any (..., D) output);
#: ``channels``: on the spatial mean of every channel of a (B, C, H, W) output;
#: ``vector``: elementwise on a (B, D) output;
#: ``seq_first``: elementwise on every token of a (*positions, B, D) output (batch in dim -2);
#: ``unbatched``: elementwise on every token of a (*positions, D) output that is one item (no
#: batch dim; models that take batch 1 only).
MODES: tuple[str, ...] = ("tokens", "channels", "vector", "seq_first", "unbatched")

_VECTOR_FIELDS = ("scale", "shift", "lo", "hi")


@dataclass(frozen=True, eq=False, repr=False)
class TransportMap:
    """Per-unit affine transport map of one site, with the source support statistics.

    Parameters
    ----------
    scale : Tensor, shape (D,)
        ``omega``, the slope of every unit's map.
    shift : Tensor, shape (D,)
        ``beta``, the intercept of every unit's map.
    lo, hi : Tensor, shape (D,)
        Minimum and maximum of the source sample (the min-max support, ``lo <= hi``).
    quantiles : Tensor, shape (K, D)
        Source quantiles at ``quantile_levels`` (non-decreasing along K).
    method : str
        Name of the estimator that produced the map (e.g. ``"linear_act"``).
    mode : str
        One of :data:`MODES`.
    n_source, n_target : int
        Number of source and target samples the map was fitted on.
    guarded : int
        Number of (near-)constant source units that fell back to a pure shift.
    quantile_levels : tuple of float, length K
        Strictly increasing levels in [0, 1] of the rows of ``quantiles``.
    unbounded_strength : bool
        True for additive steering maps (``diff_means``) whose strength has no calibrated
        meaning; no extrapolation warning is logged for them.
    gate : Gate or None
        When set, the strength is scaled by how source-like each input is
        (:mod:`act_core.gate`); None (default) transports every input.

    Raises
    ------
    MapError
        If shapes disagree, a value is non-finite, ``lo > hi`` or a field is out of range.
    """

    scale: torch.Tensor
    shift: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    quantiles: torch.Tensor
    method: str = "linear_act"
    mode: str = "tokens"
    n_source: int = 0
    n_target: int = 0
    guarded: int = 0
    quantile_levels: tuple[float, ...] = QUANTILE_LEVELS
    unbounded_strength: bool = False
    gate: Gate | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantile_levels", tuple(float(q) for q in self.quantile_levels))
        self._check_tensors()
        self._check_fields()

    def _check_tensors(self) -> None:
        for name in (*_VECTOR_FIELDS, "quantiles"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise MapError(f"TransportMap.{name} must be a floating-point tensor, "
                               f"found {type(value).__name__}")
        dim = self.scale.shape
        if self.scale.ndim != 1 or dim[0] == 0:
            raise MapError(f"TransportMap.scale must have shape (D,) with D > 0, "
                           f"found {tuple(dim)}")
        for name in _VECTOR_FIELDS[1:]:
            if getattr(self, name).shape != dim:
                raise MapError(f"TransportMap.{name} has shape {tuple(getattr(self, name).shape)},"
                               f" expected {tuple(dim)} like scale")
        expected = (len(self.quantile_levels), dim[0])
        if tuple(self.quantiles.shape) != expected:
            raise MapError(f"TransportMap.quantiles has shape {tuple(self.quantiles.shape)}, "
                           f"expected (K, D) = {expected}")
        for name in (*_VECTOR_FIELDS, "quantiles"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise MapError(f"TransportMap.{name} contains NaN or infinite values; "
                               "refit from finite samples")
        if bool((self.lo > self.hi).any()):
            raise MapError("TransportMap.lo exceeds hi for some units; lo and hi must be the "
                           "source minimum and maximum")

    def _check_fields(self) -> None:
        levels = self.quantile_levels
        if any(not 0.0 <= q <= 1.0 or math.isnan(q) for q in levels) or any(
            b <= a for a, b in zip(levels[:-1], levels[1:], strict=True)
        ):
            raise MapError(f"quantile_levels must be strictly increasing in [0, 1], found {levels}")
        if self.mode not in MODES:
            raise MapError(f"TransportMap.mode must be one of {MODES}, found {self.mode!r}")
        for name in ("n_source", "n_target", "guarded"):
            if int(getattr(self, name)) < 0:
                raise MapError(f"TransportMap.{name} must be >= 0, found {getattr(self, name)}")
        if self.gate is not None and (not isinstance(self.gate, Gate)
                                      or self.gate.dim != self.dim):
            raise MapError(f"TransportMap.gate must be a Gate of width D ({self.dim}), found "
                           f"{self.gate!r}")
        if int(self.guarded) > self.dim:
            raise MapError(f"TransportMap.guarded ({self.guarded}) exceeds the width "
                           f"D ({self.dim})")

    def __repr__(self) -> str:
        return (f"TransportMap(method={self.method!r}, mode={self.mode!r}, D={self.dim}, "
                f"n_source={self.n_source}, n_target={self.n_target}, guarded={self.guarded}"
                f"{', gated' if self.gate is not None else ''})")

    @property
    def dim(self) -> int:
        """Number of units D."""
        return int(self.scale.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the map's tensors."""
        return self.scale.device

    @property
    def moved_units(self) -> torch.Tensor:
        """Bool (D,): the units whose map is not the identity (scale != 1 or shift != 0)."""
        return (self.scale != 1) | (self.shift != 0)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> TransportMap:
        """Return a copy with every tensor moved to ``device`` and/or cast to ``dtype``.

        The map itself is never modified (it is frozen); ``self`` is returned when nothing changes.
        """
        if device is None and dtype is None:
            return self
        moved = {name: getattr(self, name).to(device=device, dtype=dtype)
                 for name in (*_VECTOR_FIELDS, "quantiles")}
        gate = None if self.gate is None else self.gate.to(device=device)
        if all(moved[name] is getattr(self, name) for name in moved) and gate is self.gate:
            return self
        return dataclasses.replace(self, **moved, gate=gate)

    def inverse(self) -> TransportMap:
        """Return the map that carries the target back onto the source (target -> source).

        Every unit's map ``x -> scale * x + shift`` is inverted to ``y -> (y - shift) / scale``;
        the support becomes the image of the source support (``scale * lo + shift`` ...), and the
        stored quantiles are mapped the same way; a gate is flipped (``1 - g``). This is the
        meaning AcT gives to "negative strength": apply ``tmap.inverse()`` with a positive strength.

        Raises
        ------
        MapError
            If some unit has ``scale <= 0`` (an AurA unit damped to zero cannot be undone).
        """
        if bool((self.scale <= 0).any()):
            bad = int((self.scale <= 0).sum())
            raise MapError(f"cannot invert a map with {bad} unit(s) of scale <= 0; fit a map with "
                           "source and target swapped instead")
        scale = 1.0 / self.scale
        image = self.quantiles * self.scale + self.shift  # (K, D), non-decreasing: scale > 0
        return dataclasses.replace(
            self, scale=scale, shift=-self.shift * scale,
            lo=self.lo * self.scale + self.shift, hi=self.hi * self.scale + self.shift,
            quantiles=image, n_source=self.n_target, n_target=self.n_source,
            gate=None if self.gate is None else self.gate.flipped(),
        )
