"""Applying maps to a model: each site's output is transported, inside a context.

Inside the context each site module's ``forward`` is its own forward followed by the transport
(the effect of a forward hook, without PyTorch's hook dispatch); on exit, also on error, the
modules are restored. Maps are never modified. A strength of
0 installs nothing, so the model's outputs stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ._fast.prepared import Prepared, prepare, prepares
from .errors import MapCompatibilityError, StrengthError
from .gate import apply_gate, gate_values
from .maps import TransportMap
from .patch import _MISSING, _Patched, installed
from .sites import Site, find_module, read_output, write_output
from .strength import CheckedStrengths, StrengthLike, check_strength
from .support import SupportLike, parse_support, support_bounds
from .timesteps import maps_by_range, range_index, split_range_key, timestep_ranges
from .transport import transport, transport_channels

__all__ = ["KeepTokens", "StrengthSource", "TransportPlan", "apply_transport", "transport_output"]

#: A strength, or a zero-argument callable evaluated at every hook call (for schedules).
StrengthSource = StrengthLike | Callable[[], StrengthLike]

#: A zero-argument callable evaluated at every hook call of a ``tokens`` site whose output is
#: (B, T, D): a (B, T) bool tensor of the tokens to leave unchanged, or None for none.
KeepTokens = Callable[[], "torch.Tensor | None"]


def transport_output(x: torch.Tensor, tmap: TransportMap, strength: StrengthLike,
                     support: SupportLike = "minmax", site: str = "?",
                     gate_state: dict | None = None) -> torch.Tensor:
    """Transport one site output according to the map's mode.

    ``tokens`` / ``vector`` maps act elementwise on the last dim of ``x`` (..., D); ``channels``
    maps act on the spatial means of dim 1 of ``x`` (B, C, *spatial); ``seq_first`` maps act
    elementwise on ``x`` (*positions, B, D), whose per-item strengths index dim -2;
    ``unbatched`` maps act elementwise on ``x`` (*positions, D), one item (per-item strengths
    and gates of length 1). A gated map
    (:mod:`act_core.gate`) transports with ``strength * g(x)``, per item or per token; on CPU,
    a call whose every g is 0 returns ``x`` itself. ``gate_state`` carries a ``prefix`` gate's
    running sum from call to call (:func:`act_core.gate.gate_values`).

    Raises
    ------
    MapCompatibilityError
        If the width of ``x`` is not the map's D (the message names the site).
    """
    _check_output(x, tmap, site)
    if tmap.mode == "unbatched":  # (*positions, D) is one item: (1, *positions, D), as tokens
        y = _transport_item(x.unsqueeze(0), tmap, strength, support, gate_state)
        return x if y is None else y.squeeze(0)
    g = None
    if tmap.gate is not None:
        g = gate_values(x, tmap.gate, tmap.mode, gate_state)  # (B,) or (B, T)
        if x.device.type == "cpu" and not bool(g.any()):  # no sync on accelerators
            return x
    if tmap.mode == "channels":
        y = transport_channels(x, tmap, strength, support)
    elif tmap.mode == "seq_first" and x.ndim >= 3:  # batch to the front and back: (B, ..., D)
        y = transport(x.movedim(-2, 0), tmap, strength, support)
        y = x if y.data_ptr() == x.data_ptr() else y.movedim(0, -2).contiguous()
    else:
        y = transport(x, tmap, strength, support)
    if g is None or y is x:
        return y
    return apply_gate(x, y, g)


def _transport_item(x: torch.Tensor, tmap: TransportMap, strength: StrengthLike,
                    support: SupportLike, gate_state: dict | None) -> torch.Tensor | None:
    """The transport of one item's tokens ``x`` (1, *positions, D) with per-item strengths of
    length 1 and a per-item gate; None where nothing changes."""
    g = None
    if tmap.gate is not None:
        g = gate_values(x, tmap.gate, "tokens", gate_state)  # (1,) or (1, T)
        if x.device.type == "cpu" and not bool(g.any()):
            return None
    y = transport(x, tmap, strength, support)
    if y.data_ptr() == x.data_ptr():
        return None
    return y if g is None else apply_gate(x, y, g)


def _check_output(x: torch.Tensor, tmap: TransportMap, site: str) -> None:
    """Raise MapCompatibilityError unless ``x`` has the map's width where its mode reads it."""
    channels = tmap.mode == "channels"
    if x.ndim < (3 if channels else 1) or x.shape[1 if channels else -1] != tmap.dim:
        where = "channel dim 1" if channels else "last dim"
        raise MapCompatibilityError(
            f"site {site!r}: expected a {tmap.mode} output with D={tmap.dim} in its {where}, "
            f"found shape {tuple(x.shape)}; the map was fitted on another model or site")


_RUNS_PER_SITE = 32  # prepared (shape, dtype, device) entries kept per site and strength


class _SiteHook:
    """The transport of one site's output; caches the map per device (a copy, never the
    shared map).

    With a fixed strength, ``runs`` (owned by the plan, kept across calls) holds the site's
    transport prepared per input shape, dtype and device (:func:`act_core._fast.prepared.prepare`):
    after the first call of a sampler, a call only launches the kernels.
    """

    def __init__(self, site: Site, tmap: TransportMap, strength: StrengthSource,
                 support: SupportLike, keep_tokens: KeepTokens | None = None,
                 runs: dict | None = None,
                 moved: dict[torch.device, TransportMap] | None = None,
                 gate_state: dict | None = None) -> None:
        self.site, self.tmap, self.strength, self.support = site, tmap, strength, support
        self.keep_tokens = keep_tokens
        self.runs = runs
        self._moved = {tmap.scale.device: tmap} if moved is None else moved
        # a prefix gate's running sum, or a held gate (act_core.gate.gate_values); set anew
        # for every context by the plan
        self.gate_state: dict = {} if gate_state is None else gate_state

    def _map_on(self, device: torch.device) -> TransportMap:
        tmap = self._moved.get(device)
        if tmap is None:
            tmap = self._moved.setdefault(device, self.tmap.to(device=device))
        return tmap

    def _call(self, output: object) -> object | None:
        whole = self.site.output_index is None and isinstance(output, torch.Tensor)
        x = output if whole else read_output(output, self.site)
        runs = self.runs
        if runs is not None:
            key = (x.shape, x.dtype, x.device)
            run = runs.get(key, _MISSING)
            if run is _MISSING:
                run = self._prepare(x)
                if len(runs) >= _RUNS_PER_SITE:
                    runs.clear()
                runs[key] = run
            if run is not None:
                y = run(x)
                return None if y is None else self._finish(output, whole, x, y)
        strength = self.strength() if callable(self.strength) else self.strength
        if not isinstance(strength, torch.Tensor) and strength == 0:
            return None
        tmap = self._map_on(x.device)
        y = transport_output(x, tmap, strength, self.support, str(self.site), self.gate_state)
        return None if y is x else self._finish(output, whole, x, y)

    def _prepare(self, x: torch.Tensor) -> Prepared | None:
        tmap = self._map_on(x.device)
        _check_output(x, tmap, str(self.site))
        if not prepares(tmap):
            return None
        channels = tmap.mode == "channels"
        lam = check_strength(self.strength, x.shape[0] if channels or x.ndim > 1 else None,
                             tmap)
        return prepare(x, tmap, lam, self.support)

    def _finish(self, output: object, whole: bool, x: torch.Tensor, y: torch.Tensor) -> object:
        if self.keep_tokens is not None and self.tmap.mode == "tokens" and x.ndim == 3:
            keep = self.keep_tokens()
            if keep is not None and tuple(keep.shape) == tuple(x.shape[:2]):
                y = torch.where(keep.to(x.device).unsqueeze(-1), x, y)
        return y if whole else write_output(output, self.site, y)


class TransportPlan:
    """Maps resolved on one model once, to be applied at many forward calls.

    Resolving the sites and validating the maps and support happens here, once; each
    :meth:`applied` context then only replaces each site module's ``forward`` by the module's
    own forward followed by the transport (:class:`_Patched`) and restores it on exit (also on
    error). Samplers that call the model at every step keep one plan for the run: with a fixed
    strength, the patches and their prepared transports are reused from call to call.

    Parameters
    ----------
    model, maps, support, keep_tokens
        As for :func:`apply_transport`.

    Raises
    ------
    SiteError, SupportError, MapCompatibilityError
        For a site the model lacks, an invalid support, or a value that is not a TransportMap.
    """

    def __init__(self, model: nn.Module, maps: Mapping[str, TransportMap],
                 support: SupportLike = "minmax", keep_tokens: KeepTokens | None = None) -> None:
        parse_support(support)
        self.model, self.support, self.keep_tokens = model, support, keep_tokens
        self.installs: list[tuple[Site, nn.Module, TransportMap]] = []
        self._patches: dict[object, list[_Patched]] = {}  # fixed strength -> one per site
        self._moved: list[dict[torch.device, TransportMap]] = []  # per site: the map per device
        for key, tmap in maps.items():
            if not isinstance(tmap, TransportMap):
                raise MapCompatibilityError(f"maps[{key!r}] is a {type(tmap).__name__}, "
                                            "not a TransportMap")
            site = Site.parse(key)
            support_bounds(tmap, support)
            self.installs.append((site, find_module(model, site), tmap))
            self._moved.append({tmap.scale.device: tmap})

    @contextmanager
    def applied(self, strength: StrengthSource = 1.0,
                gate_states: dict[str, dict] | None = None) -> Iterator[None]:
        """Transport the sites' outputs with ``strength`` during the calls inside the context.

        Raises StrengthError at entry for an invalid fixed strength; a strength of 0 installs
        nothing. ``gate_states`` (site -> dict, kept by the caller across contexts) lets gated
        maps keep a gate decided at an earlier call (:func:`act_core.gate.gate_values`); without
        it, each context starts its gates afresh.
        """
        strength, installs = self.checked(strength)
        with installed(self._patches_for(strength, installs, gate_states)):
            yield

    def checked(self, strength: StrengthSource) -> tuple[StrengthSource, list]:
        """The strength as :meth:`applied` uses it (a (B,) tensor converted and checked once,
        not per site) and the installs it acts on (none for a fixed strength of 0);
        StrengthError for an invalid fixed strength."""
        installs = self.installs
        if callable(strength):
            return strength, installs
        if isinstance(strength, torch.Tensor):
            if strength.ndim > 1:
                raise StrengthError(f"strength must be a number or a (B,) tensor, "
                                    f"found shape {tuple(strength.shape)}")
            if strength.ndim == 1 and installs:
                strength = CheckedStrengths.of(strength, installs[0][2])
            return strength, installs
        for _, _, tmap in installs:
            check_strength(strength, None, tmap)
        return strength, ([] if strength == 0 else installs)

    def _patches_for(self, strength: StrengthSource, installs: list,
                     gate_states: dict[str, dict] | None = None) -> list[_Patched]:
        """One :class:`_Patched` per site; kept across calls for a fixed strength, so that a
        sampler's calls reuse the same objects and their prepared transports. Gated maps get
        their gate state for this context (fresh, or the caller's ``gate_states``)."""
        key = _strength_key(strength)
        patches = None if key is None else self._patches.get(key)
        if patches is None or len(patches) != len(installs):
            patches = []
            for index, (site, module, tmap) in enumerate(installs):
                runs = None if key is None else {}
                patches.append(_Patched(module, _SiteHook(
                    site, tmap, strength, self.support, self.keep_tokens, runs,
                    self._moved[index])))
            if key is not None:
                if len(self._patches) >= _RUNS_PER_SITE:
                    self._patches.clear()
                self._patches[key] = patches
        for patch in patches:
            if patch.hook.tmap.gate is not None:
                site = str(patch.hook.site)
                patch.hook.gate_state = ({} if gate_states is None else
                                         gate_states.setdefault(site, {"hold": True}))
        return patches


def _strength_key(strength: StrengthSource) -> object | None:
    """A hashable key of a fixed strength (a number or checked per-item strengths), or None
    for strengths evaluated at every call (callables, unchecked tensors)."""
    if type(strength) is CheckedStrengths:
        return ("items", *strength)
    if isinstance(strength, (int, float)) and not isinstance(strength, bool):
        return float(strength)
    return None


def _has_ranges(maps: Mapping[str, TransportMap]) -> bool:
    return len(timestep_ranges(maps)) > 1 or any(split_range_key(k)[0] != k for k in maps)


@contextmanager
def _apply_ranges(model: nn.Module, maps: Mapping[str, TransportMap], strength: StrengthSource,
                  support: SupportLike, keep_tokens: KeepTokens | None,
                  progress: Callable[[], float] | float | None) -> Iterator[None]:
    """One plan per timestep range; a range's hooks act only while progress is in it."""
    ranges = timestep_ranges(maps)
    if progress is None:
        raise MapCompatibilityError(
            f"these maps hold {len(ranges)} timestep ranges {list(ranges)} (keys <site>@<k>): "
            "pass progress= (a number or a callable giving the position in the sampling "
            "schedule, 0 = first step, 1 = last), or pick one range with "
            "act_core.timesteps.maps_by_range(maps)[k]")
    plans = [TransportPlan(model, part, support, keep_tokens) for part in maps_by_range(maps)]
    for plan in plans:
        plan.checked(strength)  # the one check, at entry, for every range's maps

    def during(k: int) -> Callable[[], StrengthLike]:
        def strength_now() -> StrengthLike:
            now = progress() if callable(progress) else progress
            if range_index(float(now), ranges) != k:
                return 0.0
            return strength() if callable(strength) else strength
        return strength_now

    with ExitStack() as stack:
        for k, plan in enumerate(plans):
            stack.enter_context(plan.applied(during(k)))
        yield


@contextmanager
def apply_transport(model: nn.Module, maps: Mapping[str, TransportMap],
                    strength: StrengthSource = 1.0, support: SupportLike = "minmax",
                    keep_tokens: KeepTokens | None = None,
                    progress: Callable[[], float] | float | None = None) -> Iterator[None]:
    """Transport the outputs of the maps' sites during forward passes run inside the context.

    Parameters
    ----------
    model : nn.Module
    maps : mapping of str to TransportMap
        Keys are site strings (``"name[:index]"``), e.g. a :class:`~act_core.mapset.MapSet`.
    strength : float, Tensor (B,) or callable
        lambda >= 0 (see :func:`~act_core.transport.transport`); a callable is evaluated at every
        hook call and may return a float or a (B,) tensor (timestep schedules, CFG halves).
    support : str, tuple or Support
        ``"minmax"`` (default), ``"unbounded"`` or a quantile support such as ``"q0.05-0.95"``.
    keep_tokens : callable, optional
        Returns, at every hook call, a (B, T) bool tensor of the tokens that pass unchanged
        through every (B, T, D) ``tokens`` site (or None). Language models use it to leave each
        sequence's first token alone (:func:`act_core.hf.first_token_mask`).
    progress : float or callable, optional
        Only for maps with timestep ranges (keys ``<site>@<k>``, :mod:`act_core.timesteps`):
        the position in the sampling schedule (0 = first step, 1 = last), or a callable
        evaluated at every hook call; each range's maps act only while it falls in that range.

    Raises
    ------
    SiteError
        At entry, if a site does not exist in the model.
    MapCompatibilityError
        At entry, for maps with timestep ranges and no ``progress``.
    SupportError, StrengthError
        At entry, for an invalid support or fixed strength.
    MapCompatibilityError
        At a forward call, if a site's output width is not the map's D.

    A caller that applies the same maps at many calls (a sampler's steps) can build one
    :class:`TransportPlan` and enter ``plan.applied(strength)`` per call instead.
    """
    if _has_ranges(maps):
        with _apply_ranges(model, maps, strength, support, keep_tokens, progress):
            yield
        return
    with TransportPlan(model, maps, support, keep_tokens).applied(strength):
        yield
