"""Folding a map into the affine weights of the layer whose output it transports.

With a fixed strength ``lambda`` and the unbounded support, a map is one affine function per unit,
``y = x + lambda ((omega - 1) x + beta)``. When ``x`` is the output of a layer with affine weights
(a norm ``x = w * n + b``, a linear layer ``x = W u + b``, a convolution), the map moves into those
weights exactly, and the change is linear in ``lambda``::

    weight' = weight + lambda * (omega - 1) * weight        (row j of W scaled by omega_j)
    bias'   = bias   + lambda * ((omega - 1) * bias + beta)

So :func:`fold_deltas` at ``lambda = 1`` is a weight difference that any "weight + s * diff" loader
(ComfyUI's LoRA ``diff``/``diff_b`` entries) applies at strength ``s = lambda``.

What folds exactly (:func:`check_foldable` raises :class:`FoldError` with the reason otherwise):

==================================  ===========================  ==============================
layer whose output is the site      map mode                     condition
==================================  ===========================  ==============================
LayerNorm, RMSNorm, Linear          tokens / vector / seq_first  a shift (beta != 0) needs a bias
                                    / unbatched
GroupNorm, Conv                     channels                     omega == 1 (a pure shift), a bias
==================================  ===========================  ==============================

A channel map with ``omega != 1`` shifts a channel by an amount that depends on the channel's
spatial mean in the current image; no fixed weight does that. A site that is one element of a
tuple output, or a module without these weights, is not a layer output that can absorb a map.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ActError
from .maps import TransportMap
from .sites import Site

__all__ = ["FoldError", "check_foldable", "fold_deltas", "is_pure_shift"]

_ELEMENTWISE = (nn.LayerNorm, nn.Linear, nn.RMSNorm)
_CHANNELS = (nn.GroupNorm, nn.modules.conv._ConvNd)


class FoldError(ActError, ValueError):
    """A map cannot be folded exactly into a model's weights; the message says why."""


def is_pure_shift(tmap: TransportMap) -> bool:
    """True when every unit's slope is exactly 1 (the map only adds ``beta``)."""
    return bool(torch.all(tmap.scale == 1.0))


def _is_rms_like(module: nn.Module) -> bool:
    """An RMS norm of another library (transformers' LlamaRMSNorm...): a weight, no bias."""
    return type(module).__name__.endswith("RMSNorm") and isinstance(
        getattr(module, "weight", None), torch.Tensor)


def check_foldable(module: nn.Module, tmap: TransportMap, site: str | Site, *,
                   needs_bias: bool = True) -> None:
    """Raise :class:`FoldError` unless ``tmap`` folds exactly into ``module``'s weights.

    Parameters
    ----------
    module : nn.Module
        The module whose output is the site.
    tmap : TransportMap
        The map of that site, width D (= the module's output units).
    site : str or Site
        Its name, for the messages.
    needs_bias : bool
        True (default): a shift needs the module to have a bias. False: the caller will give the
        module one (e.g. a transformers config flag that adds biases).
    """
    parsed = Site.parse(site)
    kind = type(module).__name__
    if tmap.gate is not None:
        raise FoldError(f"the map of site {site!r} is gated: its strength is scaled by how "
                        "source-like each input is (a gate depends on the input), which no "
                        "fixed weight can do; apply it with hooks, or with gate 'off'")
    if parsed.output_index is not None:
        raise FoldError(f"site {site!r} is one element of a tuple output, not the output of a "
                        "layer with affine weights")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim == 0:
        raise FoldError(f"site {site!r} ({kind}) has no affine weight to fold into")
    if isinstance(module, _CHANNELS):
        if tmap.mode != "channels":
            raise FoldError(f"site {site!r} is a {kind} but its map is in {tmap.mode!r} mode, "
                            "not 'channels'")
        if not is_pure_shift(tmap):
            raise FoldError(
                f"the map of site {site!r} ({tmap.method}) acts on channel means with omega != 1: "
                "each channel is shifted by an amount that depends on its mean in the current "
                "image, which no fixed weight can do (only pure shifts, e.g. mean_act or "
                "diff_means maps, fold on a GroupNorm or convolution)")
    elif isinstance(module, _ELEMENTWISE) or _is_rms_like(module):
        if tmap.mode not in ("tokens", "vector", "seq_first", "unbatched"):
            raise FoldError(f"site {site!r} is a {kind} but its map is in {tmap.mode!r} mode; "
                            "only elementwise (tokens/vector/seq_first/unbatched) maps fold "
                            "into it")
    else:
        raise FoldError(f"site {site!r} is a {kind}, not a norm, linear or convolution layer "
                        "whose affine weights could absorb the map")
    if weight.shape[0] != tmap.dim:
        raise FoldError(f"site {site!r} has weights of shape {tuple(weight.shape)} but the map "
                        f"has D={tmap.dim}")
    has_bias = isinstance(getattr(module, "bias", None), torch.Tensor)
    if needs_bias and not has_bias and bool(torch.any(tmap.shift != 0)):
        raise FoldError(f"site {site!r} ({kind}) has no bias, so the map's shift (beta) has "
                        "nowhere to go")


def fold_deltas(tmap: TransportMap, weight: torch.Tensor, bias: torch.Tensor | None,
                strength: float = 1.0, *, out_dim: int = 0
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Weight and bias differences that fold ``tmap`` at ``strength`` into a layer.

    Parameters
    ----------
    tmap : TransportMap
        Per-unit ``omega`` (scale) and ``beta`` (shift), shape (D,).
    weight : Tensor
        The layer's weight: (D,) for a norm, (D, in) for a linear layer, (D, in, *k) for a
        convolution. ``out_dim`` is the axis of the D output units (0; -1 for (in, D) layouts).
    bias : Tensor (D,) or None
        The layer's bias; None when it has none (the bias difference is then ``lambda beta``,
        the whole new bias).
    strength : float
        ``lambda``. The differences are linear in it.

    Returns
    -------
    (weight_delta, bias_delta)
        ``lambda (omega - 1) weight`` (shape of ``weight``; None when omega == 1 everywhere) and
        ``lambda ((omega - 1) bias + beta)`` (D,; None when it is zero), in float64 on the CPU.
    """
    k = float(strength) * (tmap.scale.to("cpu", torch.float64) - 1.0)  # (D,)
    shift = float(strength) * tmap.shift.to("cpu", torch.float64)        # (D,)
    w = weight.detach().to("cpu", torch.float64)
    axis = out_dim % w.ndim
    shape = [1] * w.ndim
    shape[axis] = -1
    weight_delta = None if not bool(torch.any(k != 0)) else k.reshape(shape) * w
    bias_delta = shift if bias is None else k * bias.detach().to("cpu", torch.float64) + shift
    if not bool(torch.any(bias_delta != 0)):
        bias_delta = None
    return weight_delta, bias_delta
