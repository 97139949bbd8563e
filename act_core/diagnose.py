""""Did this do anything, and where?": per-site separation of source and target, and what moved.

From the pooled samples a fit saw (source (N, D), target (M, D) per site) and the fitted maps,
:func:`diagnose` reports for every site:

* ``separation``: how far apart source and target are, ``sum_j W2^2(a_j, b_j) / sum_j var(b_j)``
  (the 1-D squared Wasserstein distance per unit, in units of the target's variance; 0 when the
  two samples are identical);
* ``noise``: the same distance between two random halves of the pooled source + target sample,
  averaged over a few seeded splits: what separation two samples of ONE distribution of these
  sizes show. ``signal = separation / noise`` is about 1 when the prompt sets do not differ;
* ``remaining``: the separation left between the transported source and the target;
* ``moved``: the root-mean-square displacement of the source by the map, in target standard
  deviations (``sqrt(sum_j mean_i (T(a_ij) - a_ij)^2 / sum_j var(b_j))``);
* ``kept``: units whose map is not the identity.

and two warnings: the sets barely differ anywhere (every site's signal below
:data:`SIGNAL_WARNING`), and the maps move almost nothing (every site's ``moved`` below
:data:`MOVED_WARNING`). Hosts show the text and log the warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .maps import TransportMap
from .samples import pair_sorted, sort_units

__all__ = ["MOVED_WARNING", "SIGNAL_WARNING", "Diagnosis", "SiteDiagnosis", "closed_share",
           "diagnose", "short_site"]

#: Below this signal-to-noise ratio at every site, source and target are said to barely differ.
SIGNAL_WARNING = 3.0
#: Below this displacement (target standard deviations) at every site, the maps move nothing.
MOVED_WARNING = 0.02


@dataclass(frozen=True)
class SiteDiagnosis:
    """Diagnosis of one site (see the module docstring for every field)."""

    site: str
    separation: float
    noise: float
    remaining: float
    moved: float
    kept: int
    units: int

    @property
    def signal(self) -> float:
        """``separation / noise``: about 1 when source and target do not differ."""
        return self.separation / self.noise if self.noise > 0 else (
            math.inf if self.separation > 0 else 0.0)


def short_site(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: a long name keeps its start (which block)
    and its end (which module), joined by "...", so that two sites never read alike where
    only a cut end would tell them apart (input_blocks.1.1... and output_blocks.1.1...)."""
    if len(name) <= width:
        return name
    head = (width - 3) * 2 // 5
    return f"{name[:head]}...{name[len(name) - (width - 3 - head):]}"


@dataclass(frozen=True)
class Diagnosis:
    """Per-site diagnoses in forward order, and the warnings they raise."""

    sites: tuple[SiteDiagnosis, ...]
    warnings: tuple[str, ...]

    @property
    def separation(self) -> float:
        """Summed separation of every site (before the maps)."""
        return sum(s.separation for s in self.sites)

    @property
    def remaining(self) -> float:
        """Summed separation left after the maps."""
        return sum(s.remaining for s in self.sites)

    @property
    def closed(self) -> float:
        """Share of the summed separation the maps close (1: all; below 0: further apart)."""
        separation = self.separation
        return 1.0 - self.remaining / separation if separation > 0 else 0.0

    def text(self, limit: int = 40) -> str:
        """A plain-text table (the ``limit`` most separated sites) followed by the warnings."""
        kept_sites = sum(1 for s in self.sites if s.kept)
        lines = [f"{len(self.sites)} sites, {kept_sites} with a non-identity map",
                 f"{'site':<48} {'separation':>10} {'signal':>7} {'remaining':>9} "
                 f"{'moved':>6} {'kept':>9}"]
        ranked = sorted(self.sites, key=lambda s: -s.separation)[:limit]
        for s in sorted(ranked, key=self.sites.index):
            lines.append(f"{short_site(s.site, 48):<48} {s.separation:>10.4g} {s.signal:>7.3g} "
                         f"{s.remaining:>9.4g} {s.moved:>6.3g} {s.kept:>4}/{s.units:<4}")
        if len(self.sites) > limit:
            lines.append(f"... {len(self.sites) - limit} less separated sites not shown")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: Mapping) -> Diagnosis:
        """Inverse of :meth:`as_dict` (e.g. read back from a map file's metadata)."""
        sites = tuple(SiteDiagnosis(site=site, **{k: row[k] for k in (
            "separation", "noise", "remaining", "moved", "kept", "units")})
            for site, row in (data.get("sites") or {}).items())
        return cls(sites, tuple(data.get("warnings") or ()))

    def as_dict(self) -> dict:
        """JSON-ready form (for map metadata and ``act info``)."""
        return {"warnings": list(self.warnings),
                "sites": {s.site: {"separation": round(s.separation, 6),
                                   "noise": round(s.noise, 6),
                                   "remaining": round(s.remaining, 6),
                                   "moved": round(s.moved, 6), "kept": s.kept, "units": s.units}
                          for s in self.sites}}


def _distance(a: torch.Tensor, b: torch.Tensor, total_var: float) -> float:
    """``sum_j W2^2(a_j, b_j) / total_var`` for samples (N, D) and (M, D)."""
    pa, pb = pair_sorted(sort_units(a), sort_units(b))  # (D, n) each
    return float(((pa.double() - pb.double()) ** 2).mean(dim=1).sum()) / total_var


def _noise(a: torch.Tensor, b: torch.Tensor, total_var: float, splits: int = 8) -> float:
    """Mean distance between random splits (sizes N and M) of the pooled sample."""
    both = torch.cat([a, b])  # (N + M, D)
    gen = torch.Generator().manual_seed(0)
    values = []
    for _ in range(splits):
        order = torch.randperm(both.shape[0], generator=gen)
        values.append(_distance(both[order[: a.shape[0]]], both[order[a.shape[0]:]], total_var))
    return sum(values) / len(values)


def _moved(tmap: TransportMap, a: torch.Tensor) -> torch.Tensor:
    """The pooled source after the map, ignoring earlier sites (exact for the site alone)."""
    return a * tmap.scale.to(a) + tmap.shift.to(a)


def diagnose(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
             maps: Mapping[str, TransportMap],
             transported: Mapping[str, torch.Tensor] | None = None) -> Diagnosis:
    """Diagnose a fit from its pooled samples.

    Parameters
    ----------
    source, target : mapping of site to Tensor, shapes (N, D) and (M, D)
        The pooled activations of the unmodified model (the samples the maps were fitted on).
    maps : mapping of site to TransportMap
        Sites in ``maps`` without samples are skipped.
    transported : mapping of site to Tensor (N, D), optional
        The pooled source with every map applied (LinEAS records it); without it each site's
        own map is applied to its source sample.

    Returns
    -------
    Diagnosis
    """
    rows = []
    for site, tmap in maps.items():
        if site not in source or site not in target:
            continue
        a, b = source[site].float().cpu(), target[site].float().cpu()
        total_var = max(float(b.double().var(dim=0).sum()), 1e-12)
        after = (transported[site].float().cpu() if transported and site in transported
                 else _moved(tmap, a))
        own = _moved(tmap, a) - a  # (N, D): the site's own displacement
        kept = int(tmap.moved_units.sum())
        rows.append(SiteDiagnosis(
            site=site, separation=_distance(a, b, total_var), noise=_noise(a, b, total_var),
            remaining=_distance(after, b, total_var),
            moved=math.sqrt(float((own.double() ** 2).mean(dim=0).sum()) / total_var),
            kept=kept, units=tmap.dim))
    return Diagnosis(tuple(rows), tuple(_warnings(rows)))


def closed_share(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                 transported: Mapping[str, torch.Tensor]) -> float:
    """Share of the source-target separation that the maps close, over all sites.

    ``1 - sum_sites remaining / sum_sites separation`` (the fields of :func:`diagnose`, each in
    units of its site's target variance): 1 = the transported source matches the target at
    every site, 0 = no better than no map, below 0 = further from the target than with no map.
    ``transported`` should come from a pass with every map applied at once (the maps interact:
    a map moves what every later site sees), e.g. on held-out inputs.

    Parameters
    ----------
    source, target, transported : mapping of site to Tensor, shapes (N, D), (M, D), (N, D)
        Sites missing from any of the three are skipped.
    """
    separation = remaining = 0.0
    for site in source:
        if site not in target or site not in transported:
            continue
        b = target[site].float().cpu()
        total_var = max(float(b.double().var(dim=0).sum()), 1e-12)
        separation += _distance(source[site].float().cpu(), b, total_var)
        remaining += _distance(transported[site].float().cpu(), b, total_var)
    return 1.0 - remaining / separation if separation > 0 else 0.0


def _warnings(rows: list[SiteDiagnosis]) -> list[str]:
    if not rows:
        return []
    out = []
    best = max(rows, key=lambda s: s.signal)
    if best.signal < SIGNAL_WARNING:
        out.append(f"source and target barely differ at every site (largest signal "
                   f"{best.signal:.2f} at {best.site}, where about 1 means no difference): "
                   "the prompt sets may be the same, or the model may not represent the "
                   "concept; make the two sets differ only, and clearly, in the concept")
    top = max(rows, key=lambda s: s.moved)
    if top.moved < MOVED_WARNING:
        out.append(f"the fitted maps move almost nothing (largest displacement {top.moved:.3g} "
                   f"target standard deviations, at {top.site}); expect no visible effect. "
                   "Lower the sparsity, or give prompt sets that differ more")
    return out
