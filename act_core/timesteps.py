"""Timestep ranges: maps that act on one part of a sampling schedule only.

A diffusion model's activations change along the schedule, so a map set may hold one map per
site and *timestep range*. The schedule is measured as ``progress`` in [0, 1]: 0 = its start
(the noisiest step), 1 = its end. How a map file stores the ranges (format version 1):

* ``extra.buckets`` in the metadata: ``[[lo_0, hi_0], ..., [lo_{n-1}, hi_{n-1}]]``, contiguous
  fractions of the schedule from 0 to 1, in order (e.g. ``[[0.0, 0.5], [0.5, 1.0]]``);
* with ``n > 1`` ranges, the maps of range ``k`` are keyed ``<site>@<k>`` (tensors
  ``<site>@<k>.scale`` etc.); with one range (or no ``buckets`` entry, as in every file
  written before ranges existed) keys are plain site names and the maps act at every step.

Progress ``p`` falls in range ``k`` = the number of ranges after the first whose start is
strictly below ``p`` (a boundary belongs to the earlier range). ComfyUI's nodes measure
progress as the schedule's percent (``model_sampling.percent_to_sigma``); the diffusers path as
``1 - t / num_train_timesteps`` of the denoiser's timestep ``t``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from .errors import MapFileError
from .maps import TransportMap
from .mapset import MapSet

__all__ = ["RANGE_SEP", "maps_by_range", "range_index", "range_key", "range_sites",
           "split_range_key", "timestep_ranges", "validate_ranges"]

RANGE_SEP = "@"
_WHOLE = ((0.0, 1.0),)


def range_key(site: str, k: int, n: int) -> str:
    """Map key of ``site`` in range ``k`` of ``n`` (the plain site name when ``n == 1``)."""
    return site if n == 1 else f"{site}{RANGE_SEP}{k}"


def split_range_key(key: str) -> tuple[str, int]:
    """``"out.0@1"`` -> ``("out.0", 1)``; a key without an ``@<digits>`` suffix -> range 0."""
    site, sep, k = key.rpartition(RANGE_SEP)
    return (site, int(k)) if sep and k.isdigit() else (key, 0)


def timestep_ranges(maps: Mapping[str, TransportMap]) -> tuple[tuple[float, float], ...]:
    """The ranges a map set holds maps for (``((0.0, 1.0),)`` for a plain mapping)."""
    metadata = maps.metadata if isinstance(maps, MapSet) else {}
    buckets = (metadata.get("extra") or {}).get("buckets")
    return tuple((float(lo), float(hi)) for lo, hi in buckets) if buckets else _WHOLE


def range_sites(maps: Mapping[str, TransportMap]) -> list[str]:
    """The distinct sites, in key order, without their range suffixes."""
    return list(dict.fromkeys(split_range_key(key)[0] for key in maps))


def maps_by_range(maps: Mapping[str, TransportMap]) -> list[MapSet]:
    """One MapSet per timestep range, keyed by plain site names (metadata kept, with
    ``extra.buckets`` reduced to the part's own range)."""
    n = len(timestep_ranges(maps))
    parts: list[dict[str, TransportMap]] = [{} for _ in range(n)]
    for key, tmap in maps.items():
        site, k = split_range_key(key) if n > 1 else (key, 0)
        if k >= n:
            raise MapFileError(f"map key {key!r} names timestep range {k}, but the maps record "
                               f"only {n} range(s) in extra.buckets")
        parts[k][site] = tmap
    metadata = maps.metadata if isinstance(maps, MapSet) else {}
    if n == 1:
        return [MapSet(parts[0], metadata)]
    out = []
    for part, bounds in zip(parts, timestep_ranges(maps)):
        own = copy.deepcopy(metadata)
        own["extra"]["buckets"] = [list(bounds)]  # the part's own range: plain keys
        out.append(MapSet(part, own))
    return out


def range_index(progress: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range that ``progress`` (0 = start of the schedule) falls in."""
    return sum(1 for lo, _ in ranges[1:] if progress > lo)


def validate_ranges(buckets: object, keys: Sequence[str], where: str = "maps") -> None:
    """Check a file's ``extra.buckets`` against its map keys.

    Raises
    ------
    MapFileError
        When the ranges are not contiguous fractions from 0 to 1, or a key names a range the
        file does not record, or a range has no maps.
    """
    if buckets is None:
        return
    try:
        ranges = [(float(lo), float(hi)) for lo, hi in buckets]
    except (TypeError, ValueError) as error:
        raise MapFileError(f"{where}: extra.buckets must be a list of [start, end] pairs, found "
                           f"{buckets!r}") from error
    ends = [bound for pair in ranges for bound in pair]
    if not ranges or ends[0] != 0.0 or ends[-1] != 1.0 or ends != sorted(ends) or any(
            ranges[i][1] != ranges[i + 1][0] for i in range(len(ranges) - 1)):
        raise MapFileError(f"{where}: extra.buckets must be contiguous ranges from 0 to 1 in "
                           f"order, found {buckets!r}")
    if len(ranges) == 1:
        return
    used = {split_range_key(key)[1] for key in keys}
    plain = [key for key in keys if split_range_key(key)[0] == key]
    if plain or not used <= set(range(len(ranges))) or len(used) != len(ranges):
        raise MapFileError(f"{where}: {len(ranges)} timestep ranges need keys <site>@0 ... "
                           f"<site>@{len(ranges) - 1}, found ranges {sorted(used)} and "
                           f"{len(plain)} plain key(s)")
