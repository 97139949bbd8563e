"""One gate for a whole map set: steer a sequence only once it has shown the source concept.

The per-site gates of :mod:`act_core.gate` score every site's activation by itself; on a
language model they separate a toxic text from its softened twin only weakly (docs/llm.md). A
*sequence gate* reads one place of the model (the ``reader`` site, e.g. the residual stream
after an early decoder layer), scores every token there with one linear probe, and switches the
whole map set on for a sequence from the first token whose score passes a threshold::

    s_t = <w, x_t> + b                   one projection per token, x_t (D,) at the reader
    g_t = 1  if max(s_1, ..., s_t) > 0   (the running max also covers generated tokens)
          0  otherwise

``g`` is a strict step: a sequence whose every token so far scores at most 0 keeps all of its
activations bit for bit. The probe is a linear discriminant with Ledoit-Wolf shrinkage on
standardised token activations (standardisation folded into ``w`` and ``b``):

* positives: the tokens of each source text that its paired target lacks (for paired data such
  as ``toxicity:paired`` the swapped offensive words), or every source token when the texts are
  not paired;
* negatives: every token of every target text;
* threshold (``b``): the largest score of any target token, so every token of every training
  target text gets g = 0 (``quantile`` = 1, the default); or the ``quantile``-th quantile of the
  target tokens' scores (e.g. 0.99: 1% of the training target tokens pass, trading benign texts
  left alone for recall); ``margin`` raises it by that many standard deviations of the target
  tokens' scores (fewer benign texts switch it on).

Pooling ``draft`` looks ahead: :func:`act_core.hf.generate.generate` first writes the
continuation unsteered (the *draft*), reads prompt + draft, and writes the continuation again
with the maps, steered from the first token, only for the sequences in which some token passed.
A sequence that never passes is the unsteered model's text, bit for bit.

This module holds the data and the fitting (pure torch); the language-model host reads the
reader site and applies the step (:mod:`act_core.hf.gating`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import FitError, MapError
from .gate import check_probe, separation_auroc

__all__ = ["POOLINGS", "SequenceGate", "fit_sequence_gate", "heldout_on",
           "ledoit_wolf_shrinkage"]

#: How token scores are pooled along the sequence: ``max`` a running max (on from the first
#: token that passes, causal); ``prompt`` the same, except that a call that starts sequences (a
#: prompt) is steered from its first token when any of its tokens passes (not causal inside the
#: prompt; decoding steps are as ``max``); ``draft`` the look-ahead of the module notes (in one
#: forward call or a plain ``model.generate``, as ``prompt``).
POOLINGS: tuple[str, ...] = ("max", "prompt", "draft")


@dataclass(frozen=True, eq=False)
class SequenceGate:
    """A gate for a whole map set, read at one site.

    Parameters
    ----------
    site : str
        The reader: a site string (module path, optional ``:index``) whose (B, T, D) output is
        scored, e.g. ``"model.layers.1"`` (the residual stream after the second decoder layer).
    weight : Tensor, shape (D,)
        Probe direction in the reader's raw coordinates (standardisation folded in).
    bias : float
        Offset: a token passes when ``<weight, x> + bias > 0``.
    pooling : str
        One of :data:`POOLINGS`.
    auroc : float
        Training separation of source and target texts by their pooled score (0.5: none).
    source_on, target_on : float
        Fraction of training source / target texts that switch the gate on.
    quantile : float
        The threshold's quantile of the training target tokens' scores (1: their maximum).
    margin : float
        The threshold's rise above that, in standard deviations of those scores (0: none).
    heldout_source_on, heldout_target_on : float or None
        The same shares for texts the gate was not fitted on: two folds of the texts (pairs
        stay together), each read by a gate fitted the same way on the other; None when a side
        has fewer than 4 texts. What a gate recognises beyond its own texts.
    """

    site: str
    weight: torch.Tensor
    bias: float = 0.0
    pooling: str = "max"
    auroc: float = 0.5
    source_on: float = 1.0
    target_on: float = 0.0
    quantile: float = 1.0
    margin: float = 0.0
    heldout_source_on: float | None = None
    heldout_target_on: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.site, str) or not self.site:
            raise MapError(f"SequenceGate.site must be a non-empty site string, found "
                           f"{self.site!r}")
        check_probe("SequenceGate", self.weight, self.bias, self.pooling, POOLINGS)
        object.__setattr__(self, "bias", float(self.bias))

    @property
    def dim(self) -> int:
        """Width D of the reader."""
        return int(self.weight.shape[0])

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Token scores ``<weight, x> + bias`` (float32), x (..., D) -> (...)."""
        weight = self.weight
        if weight.device != x.device or weight.dtype != torch.float32:
            weight = weight.to(x.device, torch.float32)
        return torch.matmul(x if x.dtype == torch.float32 else x.float(), weight) + self.bias

    def metadata(self) -> dict:
        """The JSON part of the map file entry (the weight is a tensor of its own)."""
        return {"site": self.site, "bias": self.bias, "pooling": self.pooling,
                "auroc": self.auroc, "source_on": self.source_on, "target_on": self.target_on,
                "quantile": self.quantile, "margin": self.margin,
                **({"heldout_source_on": self.heldout_source_on,
                    "heldout_target_on": self.heldout_target_on}
                   if self.heldout_source_on is not None else {})}

    def describe(self) -> str:
        """One line for ``act info``."""
        level = "strict" if self.quantile >= 1.0 else f"q{self.quantile:g}"
        if self.margin:
            level += f" {self.margin:+g} sd"
        return (f"sequence gate at {self.site} (D={self.dim}, {self.pooling} pooling, {level} "
                f"step): auroc={self.auroc:.2f} on for {100 * self.source_on:.0f}% of source "
                f"and {100 * self.target_on:.0f}% of target texts"
                + ("" if self.heldout_source_on is None else
                   f"; held out (2 folds): {100 * self.heldout_source_on:.0f}% and "
                   f"{100 * self.heldout_target_on:.0f}%"))


def ledoit_wolf_shrinkage(x: torch.Tensor) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity for the covariance of centred rows x (N, D).

    The covariance estimate is ``(1 - a) S + a (tr S / D) I`` with ``S = x^T x / N``;
    ``a = min(b2, d2) / d2`` where ``d2 = ||S - (tr S / D) I||_F^2`` and ``b2`` is the mean
    squared distance of the rank-one terms ``x_k x_k^T`` from ``S``, divided by N.
    """
    n, d = x.shape
    s = x.T @ x / n  # (D, D)
    mu = float(torch.trace(s)) / d
    d2 = float(((s - mu * torch.eye(d, dtype=x.dtype)) ** 2).sum())
    norms = (x ** 2).sum(1)  # (N,)
    b2 = (float((norms ** 2).sum()) / n - float((s ** 2).sum())) / n
    if d2 <= 0:
        return 1.0
    return min(max(b2, 0.0), d2) / d2


def shrunk_discriminant(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Fisher's discriminant direction (D,) between rows pos (N, D) and neg (M, D).

    ``C^-1 (mean pos - mean neg)`` with ``C`` the pooled within-class covariance shrunk towards
    ``(tr C / D) I`` by :func:`ledoit_wolf_shrinkage`, so that it stays invertible with fewer
    rows than units. Computed in the inputs' dtype (float64 for the gates).
    """
    centred = torch.cat([pos - pos.mean(0), neg - neg.mean(0)])
    shrink = ledoit_wolf_shrinkage(centred)
    cov = centred.T @ centred / centred.shape[0]
    cov = (1 - shrink) * cov + shrink * float(torch.trace(cov)) / cov.shape[0] * torch.eye(
        cov.shape[0], dtype=cov.dtype)
    return torch.linalg.solve(cov, pos.mean(0) - neg.mean(0))


def heldout_on(source: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
               positives: Sequence[torch.Tensor] | None, quantile: float = 1.0,
               margin: float = 0.0) -> tuple[float, float] | None:
    """Shares of source and target texts that switch on a gate fitted without them.

    The texts are split in two folds by index parity (``source[i]`` and ``target[i]`` fall in
    the same fold, so pairs stay together); each fold is read by a gate fitted on the other
    with the same ``quantile`` and ``margin``. None when a side has fewer than 4 texts or
    neither fold can be fitted (no positive token in it)."""
    if len(source) < 4 or len(target) < 4:
        return None
    on_src = on_tgt = n_src = n_tgt = 0
    for fold in (0, 1):
        fit_idx = [i for i in range(len(source)) if i % 2 != fold]
        try:
            gate = fit_sequence_gate(
                "held-out", [source[i] for i in fit_idx],
                [t for i, t in enumerate(target) if i % 2 != fold],
                None if positives is None else [positives[i] for i in fit_idx],
                quantile=quantile, margin=margin, heldout=False)
        except FitError:
            continue
        held_src = [s for i, s in enumerate(source) if i % 2 == fold and s.shape[0]]
        held_tgt = [t for i, t in enumerate(target) if i % 2 == fold and t.shape[0]]
        on_src += sum(bool(gate.scores(s).max() > 0) for s in held_src)
        on_tgt += sum(bool(gate.scores(t).max() > 0) for t in held_tgt)
        n_src, n_tgt = n_src + len(held_src), n_tgt + len(held_tgt)
    if not n_src or not n_tgt:
        return None
    return on_src / n_src, on_tgt / n_tgt


def fit_sequence_gate(site: str, source: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                      positives: Sequence[torch.Tensor] | None = None,
                      pooling: str = "max", quantile: float = 1.0,
                      margin: float = 0.0, heldout: bool = True) -> SequenceGate:
    """Fit a sequence gate from per-token reader activations (float64 inside).

    Parameters
    ----------
    site : str
        The reader site the activations come from.
    source, target : sequence of Tensor (T_i, D)
        Each text's token activations at the reader (padding and, if wanted, the first token
        already removed).
    positives : sequence of bool Tensor (T_i,), optional
        Which source tokens are positives (see the module notes); None: every source token.
    pooling : str
        One of :data:`POOLINGS` (how the host applies the gate; the fit is the same).
    quantile : float
        Threshold: 1 (default) just above the largest target token score; below 1, that
        quantile of the target token scores (in (0, 1]).
    margin : float
        Raise the threshold by this many standard deviations of the target token scores
        (>= 0; default 0).
    heldout : bool
        Also measure :func:`heldout_on` (two more fits of the probe; the activations are
        read once).

    Raises
    ------
    FitError
        For empty inputs, mismatched widths, no positive token, a quantile outside (0, 1] or a
        negative margin.
    """
    if not margin >= 0.0:
        raise FitError(f"sequence gate margin must be >= 0 (standard deviations of the target "
                       f"tokens' scores), found {margin}")
    if not 0.0 < quantile <= 1.0:
        raise FitError(f"sequence gate quantile must be in (0, 1], found {quantile}; use 1 for "
                       "the strict threshold (every training target token off)")
    source = [s for s in source if s.shape[0] > 0] if positives is None else list(source)
    target = [t for t in target if t.shape[0] > 0]
    if not source or not target:
        raise FitError("a sequence gate needs at least one source and one target text with "
                       "tokens")
    widths = {int(t.shape[-1]) for t in (*source, *target)}
    if len(widths) != 1 or any(t.ndim != 2 for t in (*source, *target)):
        raise FitError(f"a sequence gate needs (T, D) activations of one width, found widths "
                       f"{sorted(widths)}")
    if positives is None:
        positives = [torch.ones(s.shape[0], dtype=torch.bool) for s in source]
    if len(positives) != len(source):
        raise FitError(f"positives: one mask per source text ({len(source)}), found "
                       f"{len(positives)}")
    pos = torch.cat([s.detach().cpu().double()[m.cpu().bool()]
                     for s, m in zip(source, positives, strict=True)])
    neg = torch.cat([t.detach().cpu().double() for t in target])
    if pos.shape[0] < 1 or neg.shape[0] < 2:
        raise FitError("a sequence gate needs at least one positive source token and two "
                       "target tokens; are the source and target texts identical?")
    both = torch.cat([pos, neg])
    mean, std = both.mean(0), both.std(0) + 1e-6  # (D,)
    zp, zn = (pos - mean) / std, (neg - mean) / std
    w = shrunk_discriminant(zp, zn)  # (D,), standardised coordinates
    weight = w / std
    offset = -float(mean @ weight)
    neg_scores = neg @ weight + offset
    if quantile >= 1.0:  # every target token scores <= 0, with a margin for float32 rounding
        threshold = float(neg_scores.max()) + 1e-4 * float(
            neg_scores.std() if neg.shape[0] > 1 else 1)
    else:
        threshold = float(torch.quantile(neg_scores, quantile))
    threshold += margin * float(neg_scores.std() if neg.shape[0] > 1 else 1)
    bias = offset - threshold
    pooled_src = torch.stack([(s.double().cpu() @ weight).max() for s in source]) + bias
    pooled_tgt = torch.stack([(t.double().cpu() @ weight).max() for t in target]) + bias
    held_src, held_tgt = (heldout_on(source, target, positives, quantile, margin) if heldout
                          else None) or (None, None)
    return SequenceGate(site=site, weight=weight.to(torch.float32), bias=bias, pooling=pooling,
                        auroc=separation_auroc(pooled_src, pooled_tgt),
                        source_on=float((pooled_src > 0).double().mean()),
                        target_on=float((pooled_tgt > 0).double().mean()), quantile=quantile,
                        margin=float(margin), heldout_source_on=held_src,
                        heldout_target_on=held_tgt)
