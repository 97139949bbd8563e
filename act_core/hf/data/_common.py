"""Shared helpers of :mod:`act_core.hf.data`: the error type, and finding packages unimported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from act_core.errors import ActError

__all__ = ["DataUnavailableError", "package_dir"]


class DataUnavailableError(ActError, LookupError):
    """A built-in data set or judge is unknown, or needs a package that is not installed."""


def package_dir(name: str, install_hint: str) -> Path:
    """Folder of an installed package, located without importing it (its import may be heavy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(f"package {name!r} is not installed; fix: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])
