"""Keep a map only on the units where source and target differ beyond sampling noise.

An estimator fits every unit of a site, including units whose source and target samples differ
by no more than two draws of one distribution would. Such a unit's map is fitted on noise: it
moves the activation a little, in a direction that means nothing, and hundreds of them at
every site cost the model's fluency (perplexity) without adding to the effect.

:func:`keep_units` sets those units to the identity (scale 1, shift 0). A unit is kept when the
Welch statistic of its mean difference,

    z = |mean b - mean a| / sqrt(var a / N + var b / M),

exceeds ``min_z`` (``a`` the N source rows, ``b`` the M target rows of the pooled samples the
map was fitted on). When row i of the target is row i of the source rewritten (paired data, such
as ``toxicity:paired``), ``paired=True`` reads the differences d = b - a of the pairs instead,

    z = |mean d| / (std d / sqrt N),

which does not count the spread between texts that the pairs share as noise.

The result is an ordinary map: apply, fold, save and chaining treat it as any other. On
SmolLM2 concept maps, ``min_z = 2`` keeps 17-33% of the units and cuts the perplexity cost
at a given strength by a fifth to a half; the effect falls less, so a larger strength buys it
back (docs/results.md, the sixth concept round).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

from .errors import FitError
from .maps import TransportMap

__all__ = ["UNIT_STATS", "check_min_z", "check_unit_method", "check_unit_stat", "keep_units",
           "shift_z"]

#: the statistics :func:`keep_units` reads: two samples, or the differences of pairs
UNIT_STATS = ("welch", "paired")


def check_min_z(min_z: float, name: str = "min_z") -> float:
    """``min_z`` as a float, refused (:class:`FitError`, naming ``name``) unless finite and
    >= 0."""
    value = float(min_z)
    if not (value >= 0 and math.isfinite(value)):
        raise FitError(f"{name} must be a finite number >= 0 (standard errors); got {min_z}")
    return value


def check_unit_method(unit_z: float, method: str, name: str = "unit_z") -> None:
    """Refuse (:class:`FitError`, naming ``name``) a bad ``unit_z``, and any unit selection for
    LinEAS, whose own sparsity penalty switches units off."""
    if check_min_z(unit_z, name) and method == "lineas":
        raise FitError(f"{name} is for the per-site estimators; LinEAS selects units with its "
                       "own sparsity (its l1 penalty: LineasConfig.l1, act fit --l1)")


def check_unit_stat(stat: str, name: str = "unit_stat") -> bool:
    """True for ``"paired"``, False for ``"welch"``; any other name is refused
    (:class:`FitError`)."""
    if stat not in UNIT_STATS:
        raise FitError(f"{name} must be one of {list(UNIT_STATS)}; got {stat!r}")
    return stat == "paired"


def shift_z(source: torch.Tensor, target: torch.Tensor, paired: bool = False) -> torch.Tensor:
    """Per-unit Welch statistic (D,) of the mean difference between ``source`` (N, D) and
    ``target`` (M, D); float64, 0 where both samples are constant and equal. ``paired``: the
    paired statistic of the differences ``target[i] - source[i]`` (needs M = N)."""
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise FitError(f"shift_z needs (N, D) and (M, D) samples; got {tuple(source.shape)} "
                       f"and {tuple(target.shape)}")
    if source.shape[0] < 2 or target.shape[0] < 2:
        raise FitError("shift_z needs at least 2 source and 2 target samples")
    if paired and source.shape[0] != target.shape[0]:
        raise FitError(f"the paired statistic needs one target row per source row; got "
                       f"{source.shape[0]} source and {target.shape[0]} target samples")
    a, b = source.double(), target.double()
    if paired:
        d = b - a
        diff, error = d.mean(0).abs(), (d.var(0) / d.shape[0]).sqrt()
    else:
        diff = (b.mean(0) - a.mean(0)).abs()
        error = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    tiny = torch.finfo(torch.float64).tiny
    return torch.where(error > tiny, diff / error.clamp_min(tiny),
                       torch.where(diff > 0, torch.inf, 0.0))


def keep_units(maps: Mapping[str, TransportMap], source: Mapping[str, torch.Tensor],
               target: Mapping[str, torch.Tensor], min_z: float, paired: bool = False
               ) -> tuple[dict[str, TransportMap], dict[str, int]]:
    """``maps`` with every unit whose :func:`shift_z` is at most ``min_z`` set to the identity.

    ``source`` and ``target`` are the pooled samples per site the maps were fitted on (as
    :func:`act_core.fitting.fit_sites` fills ``samples``). Returns the new maps and the number
    of units kept per site. ``min_z = 0`` keeps every unit (the maps are returned as they are).
    ``paired``: row i of ``target`` pairs with row i of ``source`` (:func:`shift_z`).
    """
    if check_min_z(min_z) == 0:
        return dict(maps), {key: tmap.dim for key, tmap in maps.items()}
    missing = [key for key in maps if key not in source or key not in target]
    if missing:
        raise FitError(f"no samples for sites {missing[:5]}; keep_units needs the samples "
                       "the maps were fitted on")
    kept_maps: dict[str, TransportMap] = {}
    kept: dict[str, int] = {}
    for key, tmap in maps.items():
        keep = (shift_z(source[key], target[key], paired) > min_z).to(tmap.scale.device)
        if keep.numel() != tmap.dim:
            raise FitError(f"site {key!r}: samples have {keep.numel()} units, the map {tmap.dim}")
        kept[key] = int(keep.sum())
        kept_maps[key] = dataclasses.replace(
            tmap, scale=torch.where(keep, tmap.scale, torch.ones_like(tmap.scale)),
            shift=torch.where(keep, tmap.shift, torch.zeros_like(tmap.shift)))
    return kept_maps, kept
