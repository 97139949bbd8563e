"""Fitting maps for many sites of a model, all at once or incrementally.

The caller owns the data: ``run_source(recorder)`` and ``run_target(recorder)`` run the model's
forward over the whole source / target prompt set (batched as the caller likes), and may set
``recorder.token_mask`` to the attention mask before each batch so padding is not pooled.

Cost, in forward passes over the prompt sets (P = number of stages):

* all at once (``incremental=False``): 1 target pass + 1 source pass;
* incremental (the paper's default): 1 target pass + P source passes. Stage ``s`` records the
  source with the maps of all earlier stages applied at strength 1, so a site sees the
  transported activations of the sites before it. ``stages=None`` gives one stage per site
  (exactly the reference procedure); ``stages=P`` groups consecutive sites into P stages (sites
  of one stage do not see each other's maps), trading fidelity for P passes instead of one per
  site.

The target is recorded once, on the unmodified model: it is the distribution to reach.
The forward order of the sites is taken from the target pass (the order hooks first ran), so
sites registered out of execution order (e.g. a UNet's mid block) are still handled correctly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .apply import KeepTokens, StrengthSource, apply_transport
from .errors import FitError
from .estimators import ESTIMATORS, fit_many
from .maps import TransportMap
from .record import Recorder, record_activations
from .sites import Site
from .support import SupportLike, parse_support
from .units import check_min_z, check_unit_stat, keep_units

__all__ = ["RunFn", "fit_sites", "split_stages"]

#: Runs the model over one prompt set; receives the recorder (to set ``token_mask``).
RunFn = Callable[[Recorder], object]


def split_stages(sites: Sequence[str], stages: int | None) -> list[list[str]]:
    """Split ordered sites into ``stages`` consecutive groups of near-equal size.

    ``None`` (or a number >= the number of sites) gives one group per site.
    """
    if stages is None or stages >= len(sites):
        return [[site] for site in sites]
    if stages < 1:
        raise FitError(f"stages must be >= 1 or None, found {stages}")
    size, extra = divmod(len(sites), stages)
    groups, start = [], 0
    for index in range(stages):
        stop = start + size + (1 if index < extra else 0)
        groups.append(list(sites[start:stop]))
        start = stop
    return groups


def _record(model: nn.Module, sites: Sequence[Site], run: RunFn, device: torch.device | str,
            side: str) -> tuple[dict[str, torch.Tensor], Recorder]:
    with record_activations(model, sites, device=device) as recorder:
        run(recorder)
    samples = recorder.stacked()
    missing = [str(site) for site in sites if str(site) not in samples]
    if missing:
        raise FitError(f"sites {missing[:5]} never ran during the {side} pass; check that the "
                       f"run_{side} callable runs the model's forward and that they are used")
    return samples, recorder


def _fit_group(keys: Sequence[str], source: dict[str, torch.Tensor],
               target: dict[str, torch.Tensor], layouts: dict[str, str], method: str,
               options: dict, unit_z: float = 0.0, paired: bool = False
               ) -> dict[str, TransportMap]:
    pairs = {key: (source[key], target[key]) for key in keys}
    maps = fit_many(pairs, method, modes={key: layouts[key] for key in keys}, **options)
    return keep_units(maps, source, target, unit_z, paired)[0]


def fit_sites(model: nn.Module, sites: Sequence[Site | str], run_source: RunFn,
              run_target: RunFn, *, method: str = "linear_act", incremental: bool = True,
              stages: int | None = None, support_for_incremental: SupportLike = "minmax",
              strength_for_incremental: StrengthSource = 1.0,
              progress: Callable[[int, int], None] | None = None,
              device: torch.device | str = "cpu", keep_tokens: KeepTokens | None = None,
              samples: dict | None = None, unit_z: float = 0.0, unit_stat: str = "welch",
              **options: float) -> dict[str, TransportMap]:
    """Record source and target activations at ``sites`` and fit one map per site.

    Parameters
    ----------
    model : nn.Module
    sites : sequence of Site or str
    run_source, run_target : callable(recorder)
        Run the forward over all source / target inputs (see module docstring).
    method : str
        Estimator name, a key of :data:`~act_core.estimators.ESTIMATORS`.
    incremental : bool
        Fit in forward order with earlier maps applied (default, the paper's choice).
    stages : int or None
        Number of incremental stages; None = one per site.
    support_for_incremental : str, tuple or Support
        Support used when applying earlier maps during incremental fitting.
    strength_for_incremental : float or callable
        Strength of the earlier stages' maps during incremental fitting (default 1). A callable
        (see :func:`~act_core.apply.apply_transport`) lets a caller apply them only on some of
        the forward calls of ``run_source``, e.g. only at the timesteps the maps are for.
    progress : callable(done, total), optional
        Called after every forward pass; ``total`` is the number of passes.
    device : device
        Where pooled activations are kept and maps are fitted.
    keep_tokens : callable, optional
        Tokens the earlier stages' maps leave unchanged during incremental fitting (see
        :func:`~act_core.apply.apply_transport`).
    samples : dict, optional
        When given, filled with ``"source"`` and ``"target"``: ``{site: Tensor (N, D)}``, the
        pooled samples each map was fitted on (for :func:`~act_core.diagnose.diagnose`).
    unit_z : float
        Keep a unit's map only where the source-target mean difference exceeds ``unit_z``
        standard errors (:func:`~act_core.units.keep_units`); in incremental fitting the
        later stages record with the kept units only. 0 (default): every unit.
    unit_stat : str
        ``"welch"`` (default) or ``"paired"``: the statistic ``unit_z`` is read on; paired needs
        the i-th target input to be the i-th source input rewritten.
    **options
        Passed to the estimator (e.g. ``eps``).

    Returns
    -------
    dict of str to TransportMap, keyed by site string, in forward order.
    """
    if method not in ESTIMATORS:
        raise FitError(f"unknown method {method!r}; choose one of {sorted(ESTIMATORS)}")
    parsed = [Site.parse(site) for site in sites]
    if not parsed:
        raise FitError("no sites to fit; resolve some with resolve_sites(model, patterns)")
    parse_support(support_for_incremental)
    check_min_z(unit_z)  # before any recording
    paired = check_unit_stat(unit_stat)
    total = 1 + (len(split_stages([str(site) for site in parsed], stages)) if incremental else 1)
    target, recorder = _record(model, parsed, run_target, device, "target")
    _report(progress, 1, total)
    by_key = {str(site): site for site in parsed}
    order = [key for key in recorder.order if key in by_key]
    layouts = recorder.layouts
    if samples is not None:
        samples.update(source={}, target=target)
    if not incremental:
        source, _ = _record(model, parsed, run_source, device, "source")
        _report(progress, 2, total)
        if samples is not None:
            samples["source"] = source
        return _fit_group(order, source, target, layouts, method, options, unit_z, paired)
    maps: dict[str, TransportMap] = {}
    for done, group in enumerate(split_stages(order, stages), start=2):
        with apply_transport(model, dict(maps), strength_for_incremental,
                             support_for_incremental, keep_tokens):
            source, _ = _record(model, [by_key[key] for key in group], run_source, device,
                                "source")
        maps.update(_fit_group(group, source, target, layouts, method, options, unit_z, paired))
        if samples is not None:
            samples["source"].update(source)
        _report(progress, done, total)
    return maps


def _report(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
