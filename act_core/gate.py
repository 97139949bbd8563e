"""Gates: transport only inputs that look like the source (when to steer, apart from how).

A map says how to move an activation; a gate says how much this input needs moving. The gate of
a site is read from the same pooled source and target samples the map was fitted on (no extra
prompts): a diagonal linear discriminant (the difference of the means over the pooled per-unit
variance) projects an activation onto one score, and a clamped ramp turns the score into
``g(x)`` in [0, 1]::

    s(x) = <w, x>            w = (mean source - mean target) / (pooled variance + eps)   (D,)
    g(x) = clamp((s(x) - s0) / (s1 - s0), 0, 1)

``s0`` is the largest target score and ``s1`` the smallest source score when the two pooled
samples separate (every training target gets g = 0, every training source g = 1). When they
overlap, ``ramp = "balanced"`` (default) uses the medians of the two score samples, and
``ramp = "strict"`` keeps ``s0`` at the largest target score, raised by a millionth of the
ramp so that rounding cannot open it (every training target still gets g = 0), and ramps up
to the largest source score. Stored folded: ``g = clamp(<weight, x> + bias, 0, 1)`` with
``weight = w / (s1 - s0)`` and ``bias = -s0 / (s1 - s0)``.

The applied strength becomes ``lambda * g(x)``:

* ``channels`` maps (B, C, *spatial): one g per item, from the channel means (what was pooled);
* ``tokens`` maps (B, T, D): ``pooling = "item"`` one g per item from the token mean (diffusion
  models: per image), ``pooling = "token"`` one g per token (language models), ``pooling =
  "prefix"`` one g per token from the mean over the sequence up to it (what the pooled samples
  describe; the running sum is carried across the decoding calls of a generation, see
  :func:`gate_values`);
* ``vector`` maps (B, D): one g per item.

An item (or token) with ``g = 0`` keeps its activation bit for bit. The cost is one dot product
per item (or token) and site, plus one blend. Gates depend on the input, so a gated map cannot
be folded into weights or exported as a LoRA or control vector (:func:`check_ungated`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import FitError, MapError

if TYPE_CHECKING:
    from .maps import TransportMap

__all__ = ["DEFAULT_RAMP", "GATE_CHOICES", "LEARN_GATES", "POOLINGS", "RAMPS", "Gate",
           "apply_gate", "check_probe", "check_ungated", "fit_gate", "gate_maps", "gate_values",
           "heldout_auroc", "is_gated", "learn_gate", "select_gate",
           "separation_auroc", "ungated"]

#: How a gate reduces a (B, T, D) tokens output: one value per item, or one per token.
POOLINGS: tuple[str, ...] = ("item", "token", "prefix")
#: Where the ramp sits when the pooled source and target scores overlap (see above).
RAMPS: tuple[str, ...] = ("balanced", "strict")
#: The ramp AcT Learn Transport's plain "learned" gate gets: strict removed the dot as well and
#: left images without it closer to unchanged on the toy world's dev prompts, and matched
#: balanced on style (docs/results_gate.md). Language models (gate_maps, act fit) keep balanced.
DEFAULT_RAMP = "strict"
#: Apply-time choices: ``off`` applies the ungated maps, ``learned`` the stored gates.
GATE_CHOICES: tuple[str, ...] = ("off", "learned")
#: Learn-time choices (AcT Learn Transport's ``gate``): "learned" takes :data:`DEFAULT_RAMP`.
LEARN_GATES: tuple[str, ...] = ("off", "learned", *(f"learned {ramp}" for ramp in RAMPS))


def learn_gate(choice: str) -> bool | str:
    """The ramp to learn for one of :data:`LEARN_GATES` (``False``: no gate)."""
    if choice not in LEARN_GATES:
        raise ValueError(f"gate must be one of {LEARN_GATES}, found {choice!r}")
    return False if choice == "off" else choice.removeprefix("learned").strip() or DEFAULT_RAMP
_EPS = 1e-3  # variance floor, relative to the mean pooled variance


@dataclass(frozen=True, eq=False)
class Gate:
    """Per-site gate ``g(x) = clamp(<weight, x> + bias, 0, 1)``.

    Parameters
    ----------
    weight : Tensor, shape (D,)
        Projection of a (pooled) activation, ramp scale folded in.
    bias : float
        Offset of the ramp.
    pooling : str
        One of :data:`POOLINGS` (for ``tokens`` maps).
    auroc : float
        How well the score separated the training source from the target (0.5 = not at all).
        Measured on the samples it was fitted on, so optimistic where samples are few for
        their width.
    source_gate, target_gate : float
        Mean g over the training source and target samples.
    heldout_auroc : float or None
        The same separation with each half of the samples scored by a discriminant fitted on
        the other half (:func:`heldout_auroc`); None when a side has fewer than 2 samples (and
        in files written before it was recorded).
    """

    weight: torch.Tensor
    bias: float = 0.0
    pooling: str = "item"
    auroc: float = 0.5
    source_gate: float = 1.0
    target_gate: float = 0.0
    heldout_auroc: float | None = None

    def __post_init__(self) -> None:
        check_probe("Gate", self.weight, self.bias, self.pooling, POOLINGS)
        object.__setattr__(self, "bias", float(self.bias))

    @property
    def dim(self) -> int:
        """Width D."""
        return int(self.weight.shape[0])

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Gate:
        """A copy with the weight moved / cast (``self`` when nothing changes)."""
        moved = self.weight.to(device=device, dtype=dtype)
        return self if moved is self.weight else dataclasses.replace(self, weight=moved)

    def flipped(self) -> Gate:
        """``1 - g``: the gate of the inverse map (target-like inputs get transported)."""
        return dataclasses.replace(self, weight=-self.weight, bias=1.0 - self.bias,
                                   source_gate=1.0 - self.target_gate,
                                   target_gate=1.0 - self.source_gate)

    def describe(self) -> str:
        """One line for ``act info``."""
        held = "" if self.heldout_auroc is None else f" held-out auroc={self.heldout_auroc:.2f}"
        return (f"gate({self.pooling}) auroc={self.auroc:.2f}{held} "
                f"g(source)={self.source_gate:.2f} g(target)={self.target_gate:.2f}")


def check_probe(owner: str, weight: object, bias: object, pooling: str,
                poolings: tuple[str, ...]) -> None:
    """Raise MapError unless ``weight`` is a finite floating-point (D,) tensor, ``bias`` a finite
    number and ``pooling`` one of ``poolings``; ``owner`` names the gate class in the message
    (:class:`Gate` here, :class:`act_core.seqgate.SequenceGate`)."""
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() \
            or weight.ndim != 1:
        raise MapError(f"{owner}.weight must be a floating-point (D,) tensor, found "
                       f"{getattr(weight, 'shape', type(weight).__name__)}")
    if not bool(torch.isfinite(weight).all()) or not math.isfinite(float(bias)):
        raise MapError(f"{owner} weight or bias is NaN or infinite; refit the gate")
    if pooling not in poolings:
        raise MapError(f"{owner}.pooling must be one of {poolings}, found {pooling!r}")


def separation_auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a source sample > score of a target sample), ties counted half."""
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def fit_gate(source: torch.Tensor, target: torch.Tensor, pooling: str = "item",
             ramp: str = "balanced") -> Gate:
    """Fit a gate from pooled source (N, D) and target (M, D) samples (float64 inside).

    Raises
    ------
    FitError
        If the samples are not 2-D, differ in width or are empty.
    """
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise FitError(f"a gate needs source (N, D) and target (M, D) samples of one width, found "
                       f"{tuple(source.shape)} and {tuple(target.shape)}")
    if source.shape[0] < 1 or target.shape[0] < 1:
        raise FitError("a gate needs at least one source and one target sample")
    if pooling not in POOLINGS:
        raise FitError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
    if ramp not in RAMPS:
        raise FitError(f"ramp must be one of {RAMPS}, found {ramp!r}")
    a, b = source.detach().to("cpu", torch.float64), target.detach().to("cpu", torch.float64)
    w = _direction(a, b)  # (D,)
    s_src, s_tgt = a @ w, b @ w  # (N,), (M,)
    s0, s1 = float(s_tgt.max()), float(s_src.min())
    if not s1 > s0 and ramp == "strict":  # overlap: up to the most source-like sample
        s1 = float(s_src.max())
    elif not s1 > s0:  # overlap: ramp between the medians
        s0, s1 = float(s_tgt.median()), float(s_src.median())
    if not s1 - s0 > 1e-12 * max(1.0, abs(s0), abs(s1)):  # no separation: keep the plain map
        weight, bias = torch.zeros_like(w), 1.0
    else:
        if ramp == "strict":  # a millionth of the ramp above the largest target score, so
            s0 += 1e-6 * (s1 - s0)  # rounding in b @ weight + bias never opens it (g = 0)
        weight, bias = w / (s1 - s0), -s0 / (s1 - s0)
    g_src = torch.clamp(a @ weight + bias, 0.0, 1.0)
    g_tgt = torch.clamp(b @ weight + bias, 0.0, 1.0)
    return Gate(weight=weight.to(torch.float32), bias=bias, pooling=pooling,
                auroc=separation_auroc(s_src, s_tgt), source_gate=float(g_src.mean()),
                target_gate=float(g_tgt.mean()), heldout_auroc=heldout_auroc(a, b))


def _direction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The discriminant ``w`` (D,) of source (N, D) against target (M, D) samples."""
    ss = ((a - a.mean(0)) ** 2).sum(0) + ((b - b.mean(0)) ** 2).sum(0)  # (D,)
    var = ss / max(1, a.shape[0] + b.shape[0] - 2)
    var = var + _EPS * float(var.mean()) + 1e-12
    return (a.mean(0) - b.mean(0)) / var


def heldout_auroc(source: torch.Tensor, target: torch.Tensor) -> float | None:
    """How well the gate's discriminant tells source (N, D) from target (M, D) samples it was
    not fitted on: each side is cut into its first and second half (the order of the inputs,
    so mostly different prompts or texts), the discriminant fitted on one half of each scores
    the other, both ways round; the two AUROCs are averaged. None when a side has fewer than
    2 samples."""
    a, b = source.detach().to("cpu", torch.float64), target.detach().to("cpu", torch.float64)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        return None
    halves = [(a[: n // 2], b[: m // 2]), (a[n // 2 :], b[m // 2 :])]
    aurocs = []
    for (fit_a, fit_b), (held_a, held_b) in (halves, halves[::-1]):
        w = _direction(fit_a, fit_b)
        aurocs.append(separation_auroc(held_a @ w, held_b @ w))
    return sum(aurocs) / 2


def gate_values(x: torch.Tensor, gate: Gate, mode: str, state: dict | None = None
                ) -> torch.Tensor:
    """``g`` for a site output: (B,) per item, or (*lead,) per token (``token``, ``prefix``).

    ``x`` is (B, C, *spatial) for ``channels`` maps and (..., D) otherwise. Float32 result.
    ``state`` (a dict owned by the caller, one per site) carries the running score sum of
    ``prefix`` gates from one call to the next: a call with T > 1 tokens starts a sequence, a
    call with one token (a decoding step with a KV cache) continues it. Padding tokens count
    like any other token. For the other poolings, a state with ``"hold": True`` keeps the
    first g it computes (``state["held"]``) and returns it at later calls with the same batch
    size: a diffusion sampler decides each image's gate at the first step it transports (the
    noisiest, where the gate was learned) and keeps it for the rest of the run.
    """
    if gate.pooling == "prefix" and mode != "channels" and x.ndim == 3:
        return _prefix_values(x, gate, state)
    held = None if state is None else state.get("held")
    if held is not None and held.shape[0] == x.shape[0] and held.device == x.device:
        return held  # decided at an earlier call (see ``hold``)
    g = _item_values(x, gate, mode)
    if state is not None and state.get("hold"):
        state["held"] = g
    return g


def _item_values(x: torch.Tensor, gate: Gate, mode: str) -> torch.Tensor:
    weight = gate.weight
    if mode == "channels":
        pooled = x.mean(dim=tuple(range(2, x.ndim)), dtype=torch.float32)  # (B, C)
    elif gate.pooling == "item" and x.ndim >= 3:
        pooled = x.mean(dim=tuple(range(1, x.ndim - 1)), dtype=torch.float32)  # (B, D)
    else:
        pooled = x if x.dtype == torch.float32 else x.float()  # (..., D)
    if weight.device != pooled.device or weight.dtype != torch.float32:
        weight = weight.to(pooled.device, torch.float32)
    return torch.clamp(torch.matmul(pooled, weight) + gate.bias, 0.0, 1.0)


def _prefix_values(x: torch.Tensor, gate: Gate, state: dict | None) -> torch.Tensor:
    """(B, T) gates from the running mean of the token scores (x (B, T, D))."""
    weight = gate.weight.to(x.device, torch.float32)
    scores = torch.matmul(x if x.dtype == torch.float32 else x.float(), weight)  # (B, T)
    total = torch.cumsum(scores, dim=1)  # (B, T)
    count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float32)  # (T,)
    last = None if state is None else state.get("sum")
    if x.shape[1] == 1 and last is not None and last.shape[0] == x.shape[0]:
        total, count = total + last[:, None], count + state["count"]
    if state is not None:
        state["sum"], state["count"] = total[:, -1], float(count[-1])
    return torch.clamp(total / count + gate.bias, 0.0, 1.0)


def apply_gate(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Blend ``x + g (y - x)``: ``y`` is the ungated transport of ``x``; ``g`` (B,) or (B, T).

    Since the transport is linear in the strength, this is the transport at ``lambda * g``.
    Entries with ``g = 0`` keep ``x`` (bit for bit where ``y - x`` is finite).
    """
    shape = (*g.shape, *([1] * (x.ndim - g.ndim)))  # (B, 1, ...) or (B, T, 1)
    g = g.reshape(shape)
    if g.dtype != x.dtype:
        g = g.to(x.dtype)
    return torch.addcmul(x, g, y - x)


def is_gated(maps: Mapping[str, TransportMap]) -> bool:
    """True when some map of ``maps``, or the set itself (:mod:`act_core.seqgate`), carries a
    gate."""
    return getattr(maps, "sequence_gate", None) is not None or any(
        getattr(tmap, "gate", None) is not None for tmap in maps.values())


def check_ungated(maps: Mapping[str, TransportMap], what: str) -> None:
    """Raise :class:`~act_core.fold.FoldError` naming the gate when some map is gated."""
    from .fold import FoldError

    gated = [site for site, tmap in maps.items() if getattr(tmap, "gate", None) is not None]
    if getattr(maps, "sequence_gate", None) is not None:
        gated.insert(0, f"the set's sequence gate at {maps.sequence_gate.site}")
    if gated:
        raise FoldError(f"{what}: the maps are gated ({len(gated)} site(s), e.g. {gated[0]!r}): "
                        "a gate scales the map by how source-like each input is, which depends "
                        "on the input, and fixed weights cannot; apply the maps with hooks, "
                        "or without their gate (gate 'off')")


def ungated(maps: Mapping[str, TransportMap]) -> Mapping[str, TransportMap]:
    """The same maps without gates (a MapSet stays a MapSet, with its metadata)."""
    if not is_gated(maps):
        return maps
    plain = {site: dataclasses.replace(tmap, gate=None) if tmap.gate is not None else tmap
             for site, tmap in maps.items()}
    return _like(maps, plain)


def select_gate(maps: Mapping[str, TransportMap], gate: str) -> Mapping[str, TransportMap]:
    """``maps`` for an apply-time gate choice (one of :data:`GATE_CHOICES`): ``"off"`` drops
    the gates, ``"learned"`` keeps them (maps without a gate are applied as they are).

    Raises
    ------
    MapError
        For an unknown choice.
    """
    if gate not in GATE_CHOICES:
        raise MapError(f"gate must be one of {GATE_CHOICES}, found {gate!r}")
    return ungated(maps) if gate == "off" else maps


def gate_maps(maps: Mapping[str, TransportMap], source: Mapping[str, torch.Tensor],
              target: Mapping[str, torch.Tensor], pooling: str = "item",
              ramp: str = "balanced") -> dict[str, TransportMap]:
    """Fit one gate per site from the pooled samples the maps were fitted on.

    Parameters
    ----------
    maps : mapping of site to TransportMap
    source, target : mapping of site to Tensor (N, D) / (M, D)
        E.g. the ``samples`` filled by :func:`~act_core.fitting.fit_sites`.
    pooling : str
        For ``tokens`` maps: ``"item"`` (diffusion), ``"token"`` or ``"prefix"`` (language
        models).
    ramp : str
        ``"balanced"`` or ``"strict"`` (see the module docstring).

    Returns
    -------
    dict of site to TransportMap with ``gate`` set, in the order of ``maps``.

    Raises
    ------
    FitError
        If a site has no samples.
    """
    missing = [site for site in maps if site not in source or site not in target]
    if missing:
        raise FitError(f"no recorded samples for site(s) {missing[:5]} to learn a gate from; "
                       "pass the samples the maps were fitted on")
    return {site: dataclasses.replace(
        tmap, gate=fit_gate(source[site], target[site], pooling, ramp))
        for site, tmap in maps.items()}


def _like(maps: Mapping[str, TransportMap], new: dict) -> Mapping[str, TransportMap]:
    from .mapset import MapSet

    return MapSet(new, maps.metadata) if isinstance(maps, MapSet) else new
