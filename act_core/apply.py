"""Applying maps to a model: forward hooks that transport site outputs, inside a context.

Maps are never modified; hooks are removed when the context exits, also on error. A strength of
0 installs nothing, so the model's outputs stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from .errors import MapCompatibilityError, StrengthError
from .gate import apply_gate, gate_values
from .maps import TransportMap
from .sites import Site, find_module, read_output, write_output
from .support import SupportLike, parse_support, support_bounds
from .transport import (
    CheckedStrengths,
    StrengthLike,
    check_strength,
    transport,
    transport_channels,
)

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
    maps act on the spatial means of dim 1 of ``x`` (B, C, *spatial). A gated map
    (:mod:`act_core.gate`) transports with ``strength * g(x)``, per item or per token; on CPU,
    a call whose every g is 0 returns ``x`` itself. ``gate_state`` carries a ``prefix`` gate's
    running sum from call to call (:func:`act_core.gate.gate_values`).

    Raises
    ------
    MapCompatibilityError
        If the width of ``x`` is not the map's D (the message names the site).
    """
    channels = tmap.mode == "channels"
    width_dim = 1 if channels else -1
    if x.ndim < (3 if channels else 1) or x.shape[width_dim] != tmap.dim:
        where = "channel dim 1" if channels else "last dim"
        raise MapCompatibilityError(
            f"site {site!r}: expected a {tmap.mode} output with D={tmap.dim} in its {where}, "
            f"found shape {tuple(x.shape)}; the map was fitted on another model or site")
    gate = tmap.gate
    g = None
    if gate is not None:
        g = gate_values(x, gate, tmap.mode, gate_state)  # (B,) or (B, T)
        if x.device.type == "cpu" and not bool(g.any()):  # no sync on accelerators
            return x
    if channels:
        y = transport_channels(x, tmap, strength, support)
    else:
        y = transport(x, tmap, strength, support)
    if g is None or y is x:
        return y
    return apply_gate(x, y, g)


class _SiteHook:
    """Forward hook of one site; caches the map per device (a copy, never the shared map)."""

    def __init__(self, site: Site, tmap: TransportMap, strength: StrengthSource,
                 support: SupportLike, keep_tokens: KeepTokens | None = None,
                 gate_state: dict | None = None) -> None:
        self.site, self.tmap, self.strength, self.support = site, tmap, strength, support
        self.keep_tokens = keep_tokens
        # a prefix gate's running sum, or a held gate (act_core.gate.gate_values)
        self.gate_state: dict = {} if gate_state is None else gate_state
        self._moved: dict[torch.device, TransportMap] = {tmap.scale.device: tmap}

    # torch.compile (ComfyUI's TorchCompileModel) runs the hook eagerly, as a graph break:
    # tracing its per-map caches fails inside dynamo (torch 2.13)
    @torch.compiler.disable
    def __call__(self, module: nn.Module, args: object, output: object) -> object | None:
        strength = self.strength() if callable(self.strength) else self.strength
        if not isinstance(strength, torch.Tensor) and strength == 0:
            return None
        whole = self.site.output_index is None and isinstance(output, torch.Tensor)
        x = output if whole else read_output(output, self.site)
        tmap = self._moved.get(x.device)
        if tmap is None:
            tmap = self._moved.setdefault(x.device, self.tmap.to(device=x.device))
        y = transport_output(x, tmap, strength, self.support, str(self.site), self.gate_state)
        if y is x:
            return None
        if self.keep_tokens is not None and tmap.mode == "tokens" and x.ndim == 3:
            keep = self.keep_tokens()
            if keep is not None and tuple(keep.shape) == tuple(x.shape[:2]):
                y = torch.where(keep.to(x.device).unsqueeze(-1), x, y)
        return y if whole else write_output(output, self.site, y)


class TransportPlan:
    """Maps resolved on one model once, to be applied at many forward calls.

    Resolving the sites and validating the maps and support happens here, once; each
    :meth:`applied` context then only installs one forward hook per site and removes it on
    exit (also on error). Samplers that call the model at every step keep one plan for the run.

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
        for key, tmap in maps.items():
            if not isinstance(tmap, TransportMap):
                raise MapCompatibilityError(f"maps[{key!r}] is a {type(tmap).__name__}, "
                                            "not a TransportMap")
            site = Site.parse(key)
            support_bounds(tmap, support)
            self.installs.append((site, find_module(model, site), tmap))

    @contextmanager
    def applied(self, strength: StrengthSource = 1.0,
                gate_states: dict[str, dict] | None = None) -> Iterator[None]:
        """Transport the sites' outputs with ``strength`` during the calls inside the context.

        Raises StrengthError at entry for an invalid fixed strength; a strength of 0 installs
        nothing. ``gate_states`` (site -> dict, kept by the caller across contexts) lets gated
        maps keep a gate decided at an earlier call (:func:`act_core.gate.gate_values`).
        """
        installs = self.installs
        if not callable(strength):
            if isinstance(strength, torch.Tensor) and strength.ndim > 1:
                raise StrengthError(f"strength must be a number or a (B,) tensor, "
                                    f"found shape {tuple(strength.shape)}")
            if not isinstance(strength, torch.Tensor):
                for _, _, tmap in installs:
                    check_strength(strength, None, tmap)
                if strength == 0:
                    installs = []
            elif strength.ndim == 1 and installs:  # converted and checked once, not per site
                strength = CheckedStrengths.of(strength, installs[0][2])
        handles = []
        try:
            for site, module, tmap in installs:
                state = None if gate_states is None else gate_states.setdefault(
                    str(site), {"hold": True})
                handles.append(module.register_forward_hook(
                    _SiteHook(site, tmap, strength, self.support, self.keep_tokens, state)))
            yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def apply_transport(model: nn.Module, maps: Mapping[str, TransportMap],
                    strength: StrengthSource = 1.0, support: SupportLike = "minmax",
                    keep_tokens: KeepTokens | None = None) -> Iterator[None]:
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

    Raises
    ------
    SiteError
        At entry, if a site does not exist in the model.
    SupportError, StrengthError
        At entry, for an invalid support or fixed strength.
    MapCompatibilityError
        At a forward call, if a site's output width is not the map's D.

    A caller that applies the same maps at many calls (a sampler's steps) can build one
    :class:`TransportPlan` and enter ``plan.applied(strength)`` per call instead.
    """
    with TransportPlan(model, maps, support, keep_tokens).applied(strength):
        yield
