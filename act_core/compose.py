"""Several map sets applied together: sequential composition, one patch per site module.

Meaning. Map sets ``[A, B, ...]`` applied together act **sequentially, in the given order, at
each site**: a site's output ``x`` becomes ``T_B(T_A(x))`` (each with its own strength and
support), and a site only one set has is transported by that set alone. Sites keep the model's
forward order, so a map at a later site sees the earlier sites' transported activations, as
with a single set. This is exactly what nesting the single-set contexts gives::

    with apply_transport(model, A, a):        # outer: its patch wraps the module first
        with apply_transport(model, B, b):    # inner: wraps A's patch, so it acts last
            model(x)

and what chained AcT Apply Transport nodes give in ComfyUI (the first node's APPLY_MODEL
wrapper is the outer one). :class:`ComposedPlan` gives the same outputs, bit for bit, with one
patched ``forward`` per module instead of one per set and site.

Conflicts. :func:`find_conflicts` flags pairs of sets that push the same units of a site in
opposite directions with comparable size (they partly cancel, and the order decides the rest).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .apply import KeepTokens, StrengthSource, TransportPlan, _strength_key
from .maps import TransportMap
from .patch import _Patched, installed
from .support import SupportLike

__all__ = ["ComposedPlan", "Conflict", "apply_composed", "find_conflicts", "unit_shifts"]

log = logging.getLogger(__name__)
_CACHED = 32  # composed patch lists kept per plan (one per combination of fixed strengths)


class _Composed(_Patched):
    """One module's ``forward`` for several sets: the module's own forward, then each set's
    transport of that module's sites, in set order (within a set, in map order)."""

    __slots__ = ("hooks",)

    def __init__(self, module: nn.Module, hooks: list) -> None:
        super().__init__(module, hooks[0])
        self.hooks = hooks

    def _call(self, *args: object, **kwargs: object) -> object:
        output = self.inner(*args, **kwargs)
        for hook in self.hooks:
            transported = hook._call(output)
            if transported is not None:
                output = transported
        return output


class ComposedPlan:
    """Map sets resolved on one model, applied together as one patch per site module.

    Parameters
    ----------
    plans : sequence of TransportPlan
        One per set, all on the same model, in the order of composition (first acts first).

    Raises
    ------
    ValueError
        If the plans are on different models or there are none.
    """

    def __init__(self, plans: Sequence[TransportPlan]) -> None:
        if not plans:
            raise ValueError("ComposedPlan needs at least one TransportPlan, found none")
        if any(plan.model is not plans[0].model for plan in plans):
            raise ValueError("every plan of a ComposedPlan must be on the same model")
        self.plans = list(plans)
        self._patches: dict[tuple, list[_Composed]] = {}

    @contextmanager
    def applied(self, strengths: Sequence[StrengthSource | None]) -> Iterator[None]:
        """Transport with one strength per set (None or 0: that set is off) during the calls
        inside the context; every module is restored on exit, also on error.

        Raises StrengthError at entry for an invalid fixed strength, ValueError when the number
        of strengths is not the number of sets.
        """
        if len(strengths) != len(self.plans):
            raise ValueError(f"expected {len(self.plans)} strengths (one per map set), found "
                             f"{len(strengths)}")
        with installed(self._patches_for(strengths)):
            yield

    def _patches_for(self, strengths: Sequence[StrengthSource | None]) -> list[_Composed]:
        """One :class:`_Composed` per module that an active set patches; kept across calls
        when every strength is fixed (a number or per-item strengths: a sampler's calls then
        reuse the objects and their prepared transports)."""
        checked = [(None, []) if s is None else plan.checked(s)
                   for plan, s in zip(self.plans, strengths, strict=True)]
        keys = tuple(None if s is None else _strength_key(s) for s, _ in checked)
        cacheable = all(k is not None or s is None for k, (s, _) in zip(keys, checked))
        cached = self._patches.get(keys) if cacheable else None
        if cached is not None:
            return cached
        by_module: dict[int, tuple[nn.Module, list]] = {}
        for plan, (strength, installs) in zip(self.plans, checked):
            if strength is None or not installs:
                continue
            # the plan's own per-site patches (with their prepared transports): the composed
            # patch calls their hooks, the very code that nested plan.applied contexts run
            for patch in plan._patches_for(strength, installs):
                by_module.setdefault(id(patch.module), (patch.module, []))[1].append(patch.hook)
        patches = [_Composed(module, hooks) for module, hooks in by_module.values()]
        if cacheable:
            if len(self._patches) >= _CACHED:
                self._patches.clear()
            self._patches[keys] = patches
        return patches


@contextmanager
def apply_composed(model: nn.Module, map_sets: Sequence[Mapping[str, TransportMap]],
                   strengths: Sequence[StrengthSource | None],
                   support: SupportLike | Sequence[SupportLike] = "minmax",
                   keep_tokens: KeepTokens | None = None) -> Iterator[None]:
    """Transport with several map sets at once, sequentially in the given order at each site.

    Parameters
    ----------
    model : nn.Module
    map_sets : sequence of mappings of site -> TransportMap
        The sets, first acts first (``T_B(T_A(x))`` for ``[A, B]``).
    strengths : sequence
        One per set: a float, a (B,) tensor, a callable (evaluated at every call, e.g. a
        schedule) or None (off).
    support : support or sequence of supports
        One for all sets, or one per set.
    keep_tokens : callable, optional
        As for :func:`~act_core.apply.apply_transport`, for every set.

    The outputs equal, bit for bit, those of the nested ``apply_transport`` contexts in the same
    order; one ``forward`` per module is patched.
    """
    supports = ([support] * len(map_sets) if isinstance(support, str) or not
                isinstance(support, Sequence) else list(support))
    if len(supports) != len(map_sets):
        raise ValueError(f"expected one support or {len(map_sets)}, found {len(supports)}")
    plans = [TransportPlan(model, maps, sup, keep_tokens)
             for maps, sup in zip(map_sets, supports, strict=True)]
    with ComposedPlan(plans).applied(strengths):
        yield


@dataclass(frozen=True)
class Conflict:
    """Two sets that push the same units of one site in opposite directions.

    ``cosine`` is the cosine similarity of the two sets' per-unit shifts at strength 1 over the
    units both move (:func:`unit_shifts`): -1 means exactly opposite; ``opposed`` the fraction
    of those units whose shifts have opposite signs; ``size`` the ratio of the smaller shift
    norm to the larger (1: the same size); ``first``/``second`` name the sets.
    """

    site: str
    first: str
    second: str
    cosine: float
    opposed: float
    size: float
    units: int

    def message(self) -> str:
        return (f"maps {self.first!r} and {self.second!r} fight at site {self.site!r}: over "
                f"the {self.units} units both move, their shifts point in opposite directions "
                f"(cosine {self.cosine:.2f}, {self.opposed:.0%} of the units opposite, sizes "
                f"{self.size:.2f} apart), so they partly cancel and the order decides the rest")


def unit_shifts(tmap: TransportMap) -> torch.Tensor:
    """Per-unit shift ``T(x) - x = (scale - 1) x + shift`` at a typical source value ``x``.

    ``x`` is the middle of the unit's source range, ``(lo + hi) / 2``. Returns a (D,) float64
    tensor.
    """
    mid = (tmap.lo.double() + tmap.hi.double()) / 2
    return (tmap.scale.double() - 1) * mid + tmap.shift.double()


def find_conflicts(map_sets: Sequence[Mapping[str, TransportMap]],
                   labels: Sequence[str] | None = None, cosine: float = -0.5,
                   size: float = 1 / 3, moving: float = 0.1) -> list[Conflict]:
    """Pairs of sets that fight over the same units, per shared site.

    A unit is *moving* for a set when its shift (:func:`unit_shifts`) is at least ``moving``
    times the set's largest shift at the site. Over the units both sets move, a site is
    reported when the two shift vectors have a cosine similarity <= ``cosine`` (unrelated maps
    have a cosine near 0, with about half their units opposite by chance) and comparable size
    (the smaller norm at least ``size`` times the larger). Sites with different widths or modes
    are skipped. One warning per fighting pair is logged.

    Returns the conflicts, in set order then site order.
    """
    names = list(labels) if labels is not None else [str(i) for i in range(len(map_sets))]
    found: list[Conflict] = []
    for i in range(len(map_sets)):
        for j in range(i + 1, len(map_sets)):
            pair, shared = [], 0
            for site, a_map in map_sets[i].items():
                b_map = map_sets[j].get(site)
                if b_map is None or b_map.dim != a_map.dim or b_map.mode != a_map.mode:
                    continue
                shared += 1
                conflict = _site_conflict(site, names[i], names[j], unit_shifts(a_map),
                                          unit_shifts(b_map), moving)
                if conflict is not None and conflict.cosine <= cosine and conflict.size >= size:
                    pair.append(conflict)
            if pair:
                worst = min(pair, key=lambda c: c.cosine)
                log.warning("AcT: maps %r and %r fight at %d of their %d shared sites, e.g. %s; "
                            "lower one of them or use maps on other sites", names[i], names[j],
                            len(pair), shared, worst.message())
            found += pair
    return found


def _site_conflict(site: str, first: str, second: str, a: torch.Tensor, b: torch.Tensor,
                   moving: float) -> Conflict | None:
    """The agreement numbers of two shift vectors (D,) over the units both move."""
    a_abs, b_abs = a.abs(), b.abs()
    if float(a_abs.max()) == 0 or float(b_abs.max()) == 0:
        return None
    both = (a_abs >= moving * a_abs.max()) & (b_abs >= moving * b_abs.max())
    units = int(both.sum())
    if units == 0:
        return None
    a, b = a[both], b[both]
    norm_a, norm_b = float(a.norm()), float(b.norm())
    return Conflict(site, first, second, cosine=float(a @ b) / (norm_a * norm_b),
                    opposed=float((torch.sign(a) != torch.sign(b)).double().mean()),
                    size=min(norm_a, norm_b) / max(norm_a, norm_b), units=units)
