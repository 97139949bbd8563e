"""Exception types raised by :mod:`act_core`.

Every error raised for bad user input derives from :class:`ActError`, so a host (the ComfyUI
nodes, a script) can catch one type and show its message. The message always says what was
expected, what was found and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "ActError",
    "ActivationError",
    "BatchSizeError",
    "FitError",
    "MapCompatibilityError",
    "MapError",
    "MapFileError",
    "SiteError",
    "StrengthError",
    "SupportError",
]


class ActError(Exception):
    """Base class of every error raised by ``act_core``."""


class SiteError(ActError, LookupError):
    """A site pattern matched nothing, a module name is unknown, or an output is unreadable."""


class MapError(ActError, ValueError):
    """A :class:`~act_core.maps.TransportMap` was built from inconsistent or non-finite data."""


class FitError(ActError, ValueError):
    """Samples cannot be fitted: wrong shapes, too few samples, non-finite values, bad method."""


class ActivationError(ActError, ValueError):
    """A recorded activation is unusable (non-finite, unknown layout, bad token mask)."""


class StrengthError(ActError, ValueError):
    """A strength (lambda) is negative, non-finite or has the wrong shape."""


class SupportError(ActError, ValueError):
    """A support specification cannot be parsed or names a quantile level that is not stored."""


class MapFileError(ActError, ValueError):
    """A map file is missing, corrupted, foreign, too new or inconsistent."""


class MapCompatibilityError(ActError, ValueError):
    """A set of maps does not fit a model: missing sites, width mismatch or another family."""


class BatchSizeError(ActError, ValueError):
    """A model refuses a batch size: it takes batch 1 only (raised by a host's probe pass)."""
