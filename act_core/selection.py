"""Choosing where to act by measurement: candidate site groups scored on held-out inputs.

A host fits each candidate group of sites on part of the user's source and target inputs,
runs the held-out source inputs with the candidate's maps applied (strength 1) and compares
what the model produces with what it produces on the held-out target inputs. The score of a
candidate is that gap divided by the gap of the unsteered model (1 = no closer to the target,
0 = the same outputs as the target). This module holds the host-independent parts: the split,
the gap and the record of a selection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from .samples import pair_sorted, sort_units

__all__ = ["NO_GAIN_WARNING", "Selection", "heldout_split", "output_gap", "score_candidates",
           "select"]

log = logging.getLogger(__name__)

#: A best score above this (held-out gap / unsteered gap) means no candidate helped much.
NO_GAIN_WARNING = 0.9


def heldout_split(n: int, fraction: float = 1 / 3, most: int = 4) -> tuple[list[int], list[int]]:
    """Indices (fit, held out) of ``n`` inputs: the last ``round(n * fraction)`` inputs
    (at least 1, at most ``most``) are held out; ``n < 2`` holds out nothing."""
    if n < 2:
        return list(range(n)), []
    held = min(most, max(1, round(n * fraction)), n - 1)
    return list(range(n - held)), list(range(n - held, n))


def output_gap(produced: torch.Tensor, target: torch.Tensor, paired: bool) -> float:
    """Mean squared gap between model outputs on two input sets.

    Parameters
    ----------
    produced, target : Tensor, shape (N, ...) and (M, ...)
        One output per input (e.g. final latents); the trailing shapes must agree.
    paired : bool
        Row i of ``produced`` belongs with row i of ``target`` (same prompt line and noise):
        the mean over rows of the squared difference. Otherwise the sets are compared as
        distributions: per element, the squared 1-D Wasserstein distance of the N and M values
        (sorted samples, quantile pairing for N != M), averaged over elements.
    """
    if produced.shape[1:] != target.shape[1:]:
        raise ValueError(f"outputs of shape {tuple(produced.shape)} and "
                         f"{tuple(target.shape)} cannot be compared: the trailing dimensions "
                         "must agree (sample both sets at the same size)")
    a = produced.detach().double().flatten(1)  # (N, E)
    b = target.detach().double().flatten(1)    # (M, E)
    if paired:
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"paired outputs need as many rows on both sides, got "
                             f"{a.shape[0]} and {b.shape[0]}")
        return float((a - b).pow(2).mean())
    paired_a, paired_b = pair_sorted(sort_units(a), sort_units(b))  # (E, min(N, M)) each
    return float((paired_a - paired_b).pow(2).mean())


@dataclass(frozen=True)
class Selection:
    """The outcome of a measured choice among candidate site groups.

    ``scores`` maps each candidate's name to its held-out gap over the unsteered gap
    (lower is better; 1 = no closer to the target); ``chosen`` is the lowest.
    """

    chosen: str
    scores: Mapping[str, float]
    baseline_gap: float
    heldout: tuple[int, int]   # held-out (source, target) inputs
    paired: bool

    @property
    def warnings(self) -> tuple[str, ...]:
        best = self.scores[self.chosen]
        if not best < NO_GAIN_WARNING:
            return (f"sites = auto: no site group brought the held-out prompts much closer to "
                    f"the target (best: {self.chosen!r}, {best:.2f} of the unsteered gap; "
                    f"below {NO_GAIN_WARNING} expected). Check that the target prompts "
                    "differ from the source in what you want, or add prompts. Parallel "
                    "lists measure best: target line i = source line i with the change (with "
                    "unrelated lines, what differs between them also counts in the gap)",)
        return ()

    def text(self) -> str:
        held = f"{self.heldout[0]} source / {self.heldout[1]} target prompts held out"
        lines = [f"sites = auto chose {self.chosen!r} ({held}; held-out gap to the target "
                 "after the maps, as a fraction of the gap without them, lower is better):"]
        for name, score in sorted(self.scores.items(), key=lambda kv: kv[1]):
            lines.append(f"  {score:6.3f}  {name}{'  <- chosen' if name == self.chosen else ''}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: Mapping) -> Selection:
        """The inverse of :meth:`as_dict` (e.g. from a map file's metadata)."""
        return cls(str(data["chosen"]), {str(k): float(v) for k, v in data["scores"].items()},
                   float(data["baseline_gap"]), tuple(data["heldout"]), bool(data["paired"]))

    def as_dict(self) -> dict:
        return {"chosen": self.chosen, "scores": dict(self.scores),
                "baseline_gap": self.baseline_gap, "heldout": list(self.heldout),
                "paired": self.paired}


def select(gaps: Mapping[str, float], baseline_gap: float, heldout: tuple[int, int],
           paired: bool) -> Selection:
    """The candidate with the smallest held-out gap (ties: the first given).

    ``gaps``: candidate name -> held-out gap with its maps (from :func:`output_gap`);
    ``baseline_gap``: the same gap without maps. Non-finite gaps score infinity; with no gap
    to close (``baseline_gap == 0``) every score is ``1 + gap``, so the warning fires and the
    candidate that changes the outputs least is chosen.
    """
    if not gaps:
        raise ValueError("no candidate site groups to choose from")
    if baseline_gap > 0:
        scores = {name: (gap / baseline_gap if math.isfinite(gap) else math.inf)
                  for name, gap in gaps.items()}
    else:  # nothing to close (e.g. source = target): no candidate can help; least change wins
        scores = {name: (1.0 + gap if math.isfinite(gap) else math.inf)
                  for name, gap in gaps.items()}
    chosen = min(scores, key=lambda name: scores[name])
    return Selection(chosen, scores, baseline_gap, heldout, paired)


def score_candidates(candidates: Mapping[str, Iterable[object]], maps: Mapping[str, object],
                     outputs: Callable[[dict], torch.Tensor], reference: torch.Tensor,
                     heldout: tuple[int, int], paired: bool, label: str = "auto") -> Selection:
    """Score every candidate group of sites on the held-out inputs and choose (:func:`select`).

    ``candidates``: name -> its sites (``str(site)`` keys ``maps``, fitted for them all);
    ``outputs(chosen)`` runs the held-out source inputs with the maps ``chosen`` applied (an
    empty dict: none, the unsteered baseline) and returns one output per input, compared with
    ``reference`` (the held-out target inputs' outputs) by :func:`output_gap`. Each gap is
    logged, prefixed with ``label``.
    """
    baseline = output_gap(outputs({}), reference, paired)
    gaps = {}
    for name, sites in candidates.items():
        gaps[name] = output_gap(outputs({str(s): maps[str(s)] for s in sites}), reference,
                                paired)
        log.info("%s: %-36s held-out gap %.4g (unsteered %.4g)", label, name, gaps[name],
                 baseline)
    return select(gaps, baseline, heldout, paired)
