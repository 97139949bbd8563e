"""Strength over sampling progress: pure curves ``percent -> multiplier`` and sigma -> percent.

Progress ``p`` is ComfyUI's *percent* of the sampling schedule (0 = the noisiest step, 1 = the
end), the same scale as the start/end percent of AcT Apply Transport and ComfyUI's own hook
keyframes (``HookKeyframe.start_percent``); :class:`SigmaProgress` converts a sampler's sigma
into it through the model's own ``percent_to_sigma``. A slider's strength at progress ``p`` is
``strength * curve(p)``.

Curves (``p`` in [0, 1], values clamped to it outside):

========== ==============================================================================
constant   1
linear     ``start + (end - start) p`` (a ramp; ``linear(0, 1)`` rises, ``linear(1, 0)`` falls)
front      ``cos^2(pi p / 2)``: 1 at the start, 0.5 at p = 0.5, 0 at the end (front-loaded)
late       ``sin^2(pi p / 2)``: 0 at the start, 0.5 at p = 0.5, 1 at the end
keyframes  piecewise linear through ``(percent, value)`` points, held flat before the first
           and after the last
hold       ComfyUI hook-keyframe semantics (``HookKeyframeGroup``): the value of the last
           keyframe whose percent is <= p; the first keyframe's value before it (ComfyUI makes
           the first keyframe current from the start)
========== ==============================================================================
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ActError

__all__ = ["CURVE_KINDS", "Curve", "CurveError", "SigmaProgress", "parse_keyframes"]

CURVE_KINDS = ("constant", "linear", "front", "late", "keyframes", "hold")


class CurveError(ActError, ValueError):
    """A strength curve was given invalid parameters or keyframes."""


@dataclass(frozen=True)
class Curve:
    """A strength multiplier over sampling progress (see the module table for the kinds).

    Parameters
    ----------
    kind : str
        One of :data:`CURVE_KINDS`.
    start, end : float
        The values at p = 0 and p = 1 of a ``linear`` curve (ignored by the other kinds).
    points : tuple of (percent, value)
        ``keyframes`` / ``hold`` only: percents in [0, 1], strictly increasing; values >= 0.
    """

    kind: str = "constant"
    start: float = 0.0
    end: float = 1.0
    points: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CURVE_KINDS:
            raise CurveError(f"curve kind must be one of {CURVE_KINDS}, found {self.kind!r}")
        if self.kind == "linear" and min(self.start, self.end) < 0:
            raise CurveError(f"a linear curve needs values >= 0, found start={self.start:g}, "
                             f"end={self.end:g}; negative strengths have no meaning here")
        if self.kind in ("keyframes", "hold"):
            _check_points(self.points)
            object.__setattr__(self, "points", tuple((float(p), float(v))
                                                     for p, v in self.points))

    @property
    def constant(self) -> bool:
        """True when the curve is 1 everywhere (no sigma needs to be read while sampling)."""
        return self.kind == "constant"

    def __call__(self, percent: float) -> float:
        """The multiplier at progress ``percent`` (clamped to [0, 1])."""
        p = min(1.0, max(0.0, float(percent)))
        kind = self.kind
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return self.start + (self.end - self.start) * p
        if kind == "front":
            return math.cos(math.pi * p / 2) ** 2
        if kind == "late":
            return math.sin(math.pi * p / 2) ** 2
        percents = [q for q, _ in self.points]
        if kind == "hold":
            i = bisect.bisect_right(percents, p)
            return self.points[max(i - 1, 0)][1]
        i = bisect.bisect_right(percents, p)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (p0, v0), (p1, v1) = self.points[i - 1], self.points[i]
        return v0 + (v1 - v0) * (p - p0) / (p1 - p0)

    def sample(self, n: int = 101) -> list[tuple[float, float]]:
        """``n`` evenly spaced ``(percent, value)`` pairs from 0 to 1 (for plots)."""
        if n < 2:
            raise CurveError(f"need at least 2 samples, found {n}")
        return [(k / (n - 1), self(k / (n - 1))) for k in range(n)]


def _check_points(points: Sequence[tuple[float, float]]) -> None:
    if not points:
        raise CurveError("keyframes need at least one (percent, value) pair, found none; "
                         "write them like '0:0, 0.5:1, 1:0.5'")
    last = -1.0
    for p, v in points:
        if not 0.0 <= p <= 1.0 or p <= last:
            raise CurveError(f"keyframe percents must be in [0, 1] and strictly increasing, "
                             f"found {[q for q, _ in points]}")
        if not math.isfinite(v) or v < 0:
            raise CurveError(f"keyframe values must be finite and >= 0, found {v!r} at {p:g}")
        last = p


def parse_keyframes(text: str) -> tuple[tuple[float, float], ...]:
    """``"0:0, 0.5:1, 1:0.25"`` -> ((0.0, 0.0), (0.5, 1.0), (1.0, 0.25)).

    Pairs are ``percent:value``, separated by commas, semicolons or new lines.
    """
    pairs = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        left, sep, right = part.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((float(left), float(right)))
        except ValueError:
            raise CurveError(f"keyframe {part!r} is not 'percent:value' (e.g. '0.5:1'); "
                             f"found in {text!r}") from None
    _check_points(pairs)
    return tuple(pairs)


class SigmaProgress:
    """Sampling progress (percent, 0 = noisiest) of a sigma, for any model sampling.

    Built from the model's ``percent_to_sigma`` (decreasing in percent), tabulated at ``n``
    interior percents; a sigma is placed by interpolating the table (exact at the table's
    points, monotone between them). Sigmas above the first point give 0, below the last 1.
    """

    def __init__(self, percent_to_sigma: Callable[[float], float], n: int = 1000) -> None:
        percents = [k / n for k in range(1, n)]
        sigmas = [float(percent_to_sigma(p)) for p in percents]
        # ascending sigmas for bisect: percents descend along them
        self._sigmas = sigmas[::-1]
        self._percents = percents[::-1]

    def __call__(self, sigma: float) -> float:
        sigmas, percents = self._sigmas, self._percents
        i = bisect.bisect_left(sigmas, sigma)
        if i == 0:
            return 1.0 if sigma < sigmas[0] else percents[0]
        if i == len(sigmas):
            return 0.0
        s0, s1 = sigmas[i - 1], sigmas[i]
        p0, p1 = percents[i - 1], percents[i]
        return p1 if s1 == s0 else p0 + (p1 - p0) * (sigma - s0) / (s1 - s0)
