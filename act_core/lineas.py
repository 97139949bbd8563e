"""LinEAS: per-unit affine maps for every site, learned jointly through the frozen model.

Rodriguez et al., "End-to-end learning of activation steering with a distributional loss"
(NeurIPS 2025, arXiv 2503.10679). The maps are AcT's (``omega_j x + beta_j`` per unit), but all
sites are fitted at once, end to end, so a map at site k accounts for what the maps before it do:

1. the target inputs run once through the unmodified model; their pooled activations ``V_l``
   (M, D_l) are kept (sorted per unit);
2. every step, a batch of source inputs runs through the model with ALL current maps applied
   (gradients flow through the frozen model into every earlier map); the pooled, transported
   activations ``Z_l`` (B, D_l) of every site are compared with ``V_l``::

       loss = sum_l  sum_j W2^2(Z_lj, V_lj) / sum_j var(V_lj)

   ``W2^2`` is the 1-D squared Wasserstein distance between the whole source sample and the
   target: sorted samples, squared differences of quantiles averaged (unequal sizes pair by
   quantiles, as Linear-AcT does). A step estimates it from its batch: each batch row is
   paired with the target quantile at its rank among ALL source rows (the rows outside the
   batch as the site last saw them, moved by its current map); see :func:`_site_loss`.
   Dividing by the site's total target variance makes sites of any scale count alike;
3. an Adam step on ``(omega - 1, b)`` with ``beta = s * b`` (``s`` (D,) = the target standard
   deviation of each unit, so ``b`` is in units of the target's spread; the learning rate
   falls along a cosine from ``lr`` to ``lr * decay``), then proximal
   sparsity steps: soft-thresholding of every unit's ``(omega - 1, b)`` by ``lr * l1`` and
   shrinking of every site's whole group by ``lr * group * sqrt(2 D)`` in norm. Sites and units
   that end at the identity need no hook: this is LinEAS's own choice of where to act.

The maps start at the identity (the paper), or with ``init="linear_act"`` at every site's own
Linear-AcT map fitted on the unmodified source and target samples: the end-to-end loss then
corrects what those maps, fitted apart, get wrong together (each site's input is moved by the
maps before it).

The result is an ordinary ``{site: TransportMap}`` (``method="lineas"``): apply, fold, save and
load work unchanged. The support of each map (``lo``, ``hi``, quantiles) is read from a last
source pass with all maps applied, i.e. from the activations each map sees at strength 1.

Memory is bounded by design: one step holds the autograd graph of ``batch_size`` source inputs
(the model's own weights are frozen, so nothing is kept for their gradients), and the target and
source samples are pooled vectors, O(N D) per site.

The host supplies two callables, so any model works (transformers, ComfyUI's denoisers):
``run_target(recorder)`` runs every target input; ``run_source(indices, recorder)`` runs the
source inputs ``indices`` (called with gradients enabled; it must not disable them). Both may
set ``recorder.token_mask`` to the batch's (B, T) attention mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import FitError
from .lineas_hooks import _Hooks, _State
from .maps import TransportMap
from .record import Recorder, record_activations
from .samples import interpolate_sorted, sort_units, source_support
from .sites import Site

__all__ = ["LineasConfig", "LineasFit", "SourceBatchFn", "fit_lineas"]

log = logging.getLogger(__name__)

#: Where the optimisation starts: every map at the identity (the paper), or every site at its
#: own Linear-AcT map fitted on the unmodified source and target samples (a warm start that
#: the end-to-end loss then corrects for what the earlier maps do to each site's input).
INITS = ("identity", "linear_act")

#: Runs the source inputs with the given indices; receives the recorder (``token_mask``).
SourceBatchFn = Callable[[Sequence[int], object], object]


@dataclass(frozen=True)
class LineasConfig:
    """Optimisation settings of :func:`fit_lineas` (validated; ValueError names the fix)."""

    steps: int = 100  # Adam steps (one source batch each)
    batch_size: int = 8  # source inputs per step; bounds the memory of a step
    lr: float = 0.1  # Adam learning rate, in (omega - 1) and in target standard deviations
    decay: float = 1.0  # the rate falls along a cosine from lr to lr * decay (1: constant)
    l1: float = 0.0  # per-unit soft threshold, a fraction of lr per step
    group: float = 0.0  # per-site group threshold, a fraction of lr * sqrt(2 D) per step
    seed: int = 0  # order of the source batches
    init: str = "identity"  # start: "identity" or "linear_act" (each site's closed-form map)
    scale: bool = True  # learn omega; False: shifts only (omega held at 1)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"LineasConfig.init must be one of {INITS}, found {self.init!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, found {self.steps} and "
                             f"{self.batch_size}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"LineasConfig.decay must be in (0, 1], found {self.decay}")
        for name in ("lr", "l1", "group"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"LineasConfig.{name} must be finite and >= 0 (lr > 0), "
                                 f"found {value}")


@dataclass
class LineasFit:
    """What :func:`fit_lineas` learned, and the samples the diagnostics need.

    Attributes
    ----------
    maps : dict of str to TransportMap
        One map per site, in forward order (identity maps included: ``kept`` says which act).
    source, target : dict of str to Tensor (N, D) / (M, D)
        Pooled activations of the source (unmodified model) and of the target.
    transported : dict of str to Tensor (N, D)
        Pooled source activations with every map applied at strength 1 (what reaches the target).
    losses : list of float
        The loss of every step.
    """

    maps: dict[str, TransportMap]
    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    transported: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)

    def kept(self) -> dict[str, int]:
        """Units per site whose map is not the identity."""
        return {key: int(m.moved_units.sum()) for key, m in self.maps.items()}


def _sorted_target(target: torch.Tensor, rows: int) -> torch.Tensor:
    """Target quantiles (D, rows) at the levels a batch of ``rows`` sorted values has."""
    sorted_v = sort_units(target)  # (D, M)
    if rows == sorted_v.shape[1]:
        return sorted_v
    return interpolate_sorted(sorted_v, torch.linspace(0.0, 1.0, rows, dtype=torch.float64))


def _site_loss(z: torch.Tensor, rows: torch.Tensor, quantiles: torch.Tensor,
               slots: list[int] | None, weight: float) -> torch.Tensor:
    """``sum_j W2^2`` of the whole source sample against the target, estimated from a batch.

    ``z`` (B, D) is the batch's transported rows (differentiable); ``rows`` (R, D) every source
    row transported by the site's current map (the batch's own rows are replaced by ``z``; the
    others are the inputs the site saw when they last ran); ``quantiles`` (R, D) the target's
    sorted values at the R levels of a sample of R. Every batch row is paired with the target
    quantile at its rank among all R rows, so that the batch's loss estimates the whole
    sample's W2 and its gradient. Sorting the batch alone against the target instead fits
    the batch's own sampling noise: which B of R rows a step draws changes its sorted values
    far more than the source-target difference does when that is small (paired texts), and a
    batch's spread is not the sample's, which shrinks or stretches every map.
    ``slots`` None: the batch is the whole sample, in order (an exact sort).
    """
    if slots is None:
        sorted_z = torch.sort(z, dim=0).values  # (R, D), differentiable
        return ((sorted_z - quantiles) ** 2).mean(dim=0).sum() * weight
    pool = rows.clone()
    pool[slots] = z.detach().to(pool.dtype)
    paired = quantiles.gather(0, _ranks(pool, slots))  # (B, D)
    return ((z - paired) ** 2).mean(dim=0).sum() * weight


def _ranks(pool: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """Rank (B, D) of each of the rows ``slots`` of ``pool`` (R, D) among all R, per unit, as a
    stable sort orders them: the rows that are smaller, plus the equal rows that come before
    it (so a unit whose rows are all equal still spreads them over the target's quantiles).
    Counting, one batch row at a time, is about ten times faster than sorting every unit's R
    values twice (docs/results.md, LinEAS cost)."""
    return torch.stack([(pool < pool[s]).sum(dim=0) + (pool[:s] == pool[s]).sum(dim=0)
                        for s in slots])


def _slots(batch: Sequence[int], rows: int, per_input: int, total: int) -> list[int] | None:
    """Rows of the whole sample that a batch's ``rows`` rows are (None: all, in order)."""
    if rows == total:
        return None
    if rows != len(batch) * per_input:
        raise FitError(f"a source batch of {len(batch)} inputs gave {rows} rows at a site, "
                       f"but the whole pass gave {per_input} per input; run_source must give "
                       "every input the same number of rows")
    return [i * per_input + r for i in batch for r in range(per_input)]


def _rate(config: LineasConfig, step: int) -> float:
    """Cosine decay of the learning rate from ``lr`` (step 0) to ``lr * decay`` (last step)."""
    if config.steps < 2 or config.decay == 1.0:
        return config.lr
    fall = 0.5 * (1.0 + math.cos(math.pi * step / (config.steps - 1)))  # 1 -> 0
    return config.lr * (config.decay + (1.0 - config.decay) * fall)


def _batches(n: int, size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of ``min(size, n)`` indices, epoch after epoch of seeded permutations."""
    gen = torch.Generator().manual_seed(seed)
    size, order, out = min(size, n), [], []
    for _ in range(steps):
        batch = []
        while len(batch) < size:
            if not order:
                order = torch.randperm(n, generator=gen).tolist()
            take = [i for i in order[: size - len(batch)] if i not in batch]
            order = order[size - len(batch):]
            batch += take
        out.append(batch)
    return out


def _record_target(model: nn.Module, sites: Sequence[Site], run_target, device
                   ) -> tuple[dict[str, torch.Tensor], Recorder]:
    with torch.no_grad(), record_activations(model, sites, device=device) as recorder:
        run_target(recorder)
    target = recorder.stacked()
    missing = [str(s) for s in sites if str(s) not in target]
    if missing:
        raise FitError(f"sites {missing[:5]} never ran during the target pass; check that "
                       "run_target runs the model's forward and that these modules are used")
    small = [k for k, v in target.items() if v.shape[0] < 2]
    if small:
        raise FitError(f"sites {small[:5]} recorded fewer than 2 target rows; give at least 2 "
                       "target inputs")
    return target, recorder


def _pass(state: _State, run_source: SourceBatchFn, n: int, size: int, keys: Sequence[str]
          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A no-grad pass over every source input: pooled inputs and outputs of every map."""
    seen: dict[str, list] = {k: [] for k in keys}
    moved: dict[str, list] = {k: [] for k in keys}
    with torch.no_grad():
        for start in range(0, n, size):
            state.clear()
            run_source(list(range(start, min(n, start + size))), state)
            for k in keys:
                seen[k] += state.pooled[k]
                moved[k] += [z.detach() for z in state.moved[k]]
    state.clear()
    empty = [k for k in keys if not seen[k]]
    if empty:
        raise FitError(f"sites {empty[:5]} never ran during the source pass; run_source must "
                       "run the model's forward on the inputs it is given")
    return ({k: torch.cat(seen[k]).cpu() for k in keys},
            {k: torch.cat(moved[k]).cpu() for k in keys})


def fit_lineas(model: nn.Module, sites: Sequence[Site | str], run_source: SourceBatchFn,
               n_source: int, run_target: Callable[[Recorder], object], *,
               config: LineasConfig | None = None,
               progress: Callable[[int, int], None] | None = None,
               device: torch.device | str = "cpu",
               keep_tokens: Callable[[], torch.Tensor | None] | None = None) -> LineasFit:
    """Learn one affine map per site, jointly, by LinEAS (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Frozen during the fit (its parameters' ``requires_grad`` is restored afterwards).
    sites : sequence of Site or str
    run_source : callable(indices, recorder)
        Runs the source inputs ``indices`` (a list of ints in ``range(n_source)``) through the
        model's forward with gradients enabled.
    n_source : int
        Number of source inputs (>= 2).
    run_target : callable(recorder)
        Runs every target input (called once, without gradients).
    config : LineasConfig, optional
    progress : callable(done, total), optional
        Called after the target pass, every step and the final passes.
    device : device
        Where the maps' parameters live (the model's device).
    keep_tokens : callable, optional
        Tokens the maps leave unchanged (see :func:`~act_core.apply.apply_transport`).

    Returns
    -------
    LineasFit
        ``.maps`` is ``{site: TransportMap}`` in forward order, ``method="lineas"``.

    Raises
    ------
    FitError
        No sites, fewer than 2 inputs on a side, a site that never runs, a non-finite loss.
    """
    config = config or LineasConfig()
    parsed = [Site.parse(site) for site in sites]
    if not parsed:
        raise FitError("no sites to fit; resolve some with resolve_sites(model, patterns)")
    if n_source < 2:
        raise FitError(f"LinEAS needs at least 2 source inputs, found {n_source}")
    device = torch.device(device)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        return _fit(model, parsed, run_source, n_source, run_target, config, progress, device,
                    keep_tokens)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)


def _fit(model, parsed, run_source, n_source, run_target, config, progress, device,
         keep_tokens) -> LineasFit:
    total = config.steps + 3
    target, recorder = _record_target(model, parsed, run_target, "cpu")
    _report(progress, 1, total)
    keys = [k for k in recorder.order if k in {str(s) for s in parsed}]
    by_key = {str(s): s for s in parsed}
    widths = {k: int(target[k].shape[1]) for k in keys}
    std = {k: target[k].double().std(dim=0) for k in keys}  # (D,)
    scales = {k: (s.clamp(min=1e-3 * float(s.mean()) + 1e-12)).float().to(device)
              for k, s in std.items()}
    weights = {k: 1.0 / max(float((s ** 2).sum()), 1e-12) for k, s in std.items()}
    state = _State(keys, widths, scales, device, learn_scale=config.scale)
    state.layouts = dict(recorder.layouts)
    optimiser = torch.optim.Adam(state.params(), lr=config.lr)
    losses: list[float] = []
    size = min(config.batch_size, n_source)
    with _Hooks(model, [by_key[k] for k in keys], state, keep_tokens):
        source, _ = _pass(state, run_source, n_source, size, keys)
        start = source
        if config.init == "linear_act":  # the inputs each site sees under the first maps
            state.warm_start(source, target)
            start, _ = _pass(state, run_source, n_source, size, keys)
        _report(progress, 2, total)
        # the latest input every site saw for every source row (mapped by the site's current
        # map for the loss), and the target's quantiles at the levels of a sample of that many
        # rows (see _site_loss)
        rows = {k: start[k].to(device, copy=True) for k in keys}
        quantiles = {k: _sorted_target(target[k], rows[k].shape[0]).t().contiguous().to(device)
                     for k in keys}
        per_input = {k: max(1, rows[k].shape[0] // n_source) for k in keys}
        for step, batch in enumerate(_batches(n_source, size, config.steps, config.seed)):
            state.clear()
            with torch.enable_grad():
                run_source(batch, state)
                loss, batch_rows = 0.0, {}
                for k in keys:
                    if not state.moved[k]:
                        continue
                    z = batch_rows[k] = torch.cat(state.moved[k])  # (B, D)
                    slots = _slots(batch, z.shape[0], per_input[k], rows[k].shape[0])
                    if slots is not None:  # the drift of the batch's inputs since last seen
                        now = torch.cat(state.pooled[k]).to(rows[k])
                        rows[k] += (now - rows[k][slots]).mean(dim=0)
                    omega, beta = (c.detach() for c in state.coefficients(k))
                    loss = loss + _site_loss(z, rows[k] * omega + beta, quantiles[k], slots,
                                             weights[k])
                if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                    raise FitError("no site produced a differentiable output during a source "
                                   "step; run_source must run the forward with gradients on")
                grads = torch.autograd.grad(loss, state.params(), allow_unused=True)
            loss = loss.detach()
            if not math.isfinite(float(loss)):
                raise FitError(f"LinEAS loss became {float(loss)} at step {step}; lower lr "
                               "(or check the model's numerics)")
            for k, z in batch_rows.items():
                slots = _slots(batch, z.shape[0], per_input[k], rows[k].shape[0])
                seen_now = torch.cat(state.pooled[k]).to(rows[k])  # (B, D), the site's inputs
                rows[k][slice(None) if slots is None else slots] = seen_now
            for p, g in zip(state.params(), grads, strict=True):
                p.grad = g
            rate = _rate(config, step)
            for group in optimiser.param_groups:
                group["lr"] = rate
            optimiser.step()
            state.proximal(rate, config.l1, config.group)
            losses.append(float(loss))
            _report(progress, 3 + step, total)
        state.clear()
        seen, moved = _pass(state, run_source, n_source, size, keys)
    _report(progress, total, total)
    maps = {k: _build(k, state, seen[k], target[k].shape[0], recorder.layouts[k]) for k in keys}
    log.info("LinEAS: %d steps (%.1f passes over the %d source inputs), loss %.4g -> %.4g, "
             "%d of %d sites kept", config.steps, config.steps * size / n_source, n_source,
             losses[0], losses[-1], sum(1 for m in maps.values() if bool(m.moved_units.any())),
             len(maps))
    return LineasFit(maps=maps, source=source, target=target, transported=moved, losses=losses)


def _build(key: str, state: _State, seen: torch.Tensor, n_target: int, layout: str
           ) -> TransportMap:
    omega, beta = state.coefficients(key)
    lo, hi, quantiles = source_support(sort_units(seen.float()))
    return TransportMap(scale=omega.detach().float().cpu(), shift=beta.detach().float().cpu(),
                        lo=lo, hi=hi, quantiles=quantiles, method="lineas", mode=layout,
                        n_source=int(seen.shape[0]), n_target=int(n_target))


def _report(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
