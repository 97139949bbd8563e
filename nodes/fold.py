"""Folding maps into a ComfyUI MODEL's weights: the weight differences, as patches or a LoRA.

With a fixed strength and the unbounded support every map is one affine function per unit, and a
site that is the output of a layer with affine weights (a norm, a linear layer) absorbs it
exactly (:mod:`act_core.fold`). :func:`weight_diffs` turns a MapSet into ``{state-dict key:
difference}`` against the model's weights as they are; the differences are linear in the
strength, so the same numbers serve two uses:

* :func:`fold_model`: ActApplyTransport's mode 'folded', the differences at strength lambda added
  as ordinary ModelPatcher weight patches;
* AcT Export LoRA (``nodes/export.py``): the differences at strength 1 written as a LoRA file whose
  ``diff``/``diff_b`` entries ComfyUI's stock loaders add at the loader's strength.
"""

from __future__ import annotations

import logging

import comfy.lora
import torch

from ..act_core import MapSet
from ..act_core.fold import FoldError, check_foldable, fold_deltas
from ..act_core.schedule import ApplySettings
from ..act_core.sites import Site, find_module
from ..act_core.support import parse_support
from .common import buckets_of, maps_by_bucket

__all__ = ["PREFIX", "fold_model", "not_foldable", "weight_diffs"]

log = logging.getLogger(__name__)
PREFIX = "diffusion_model."  # of the diffusion model's keys in the ModelPatcher's state dict


def not_foldable(reason: str, what: str = "AcT Apply Transport: mode 'folded'") -> ValueError:
    return ValueError(f"{what} is exact only for a fixed affine map per unit, and here {reason}; "
                      "use mode 'hooks' (same result, applied while sampling)")


def _current(model, current: dict, key: str) -> torch.Tensor | None:
    """The weight ``key`` as the model would use it (its own patches applied), float64, CPU."""
    if key not in current:
        return None
    weight, convert = current[key][0]  # unpatched, as the patcher holds it
    value = convert(weight.to(torch.float32, copy=True), inplace=True)
    if len(current[key]) > 1:  # the model's own patches of this weight, applied
        value = comfy.lora.calculate_weight(current[key][1:], value, key)
    return value.to("cpu", torch.float64)


def weight_diffs(model, maps: MapSet, strength: float = 1.0, *, support: str = "unbounded",
                 what: str = "AcT Apply Transport: mode 'folded'") -> dict[str, torch.Tensor]:
    """``{"diffusion_model.<site>.weight" | ".bias": difference}`` folding ``maps`` at ``strength``.

    Differences (float32) against the model's weights as they are (its own patches included);
    linear in ``strength``. Raises ValueError naming the first reason the maps cannot be folded
    exactly (more than one timestep range, a bounded support, a site that cannot absorb its map).
    """
    if len(buckets_of(maps)) != 1:
        raise not_foldable(f"the maps have {len(buckets_of(maps))} timestep ranges (per-step "
                           "maps change during sampling; folded weights cannot)", what)
    if parse_support(support).kind != "unbounded":
        raise not_foldable(f"the support is {support!r} (a bounded support transports a value "
                           "only inside its range; only 'unbounded' is one affine map)", what)
    diffusion_model = model.get_model_object("diffusion_model")
    current = model.get_key_patches(PREFIX)  # key -> [(weight, convert), *patches]
    sites = maps_by_bucket(maps)[0]
    for site, tmap in sites.items():
        try:
            check_foldable(find_module(diffusion_model, Site.parse(site)), tmap, site)
        except FoldError as error:
            raise not_foldable(str(error), what) from error
    diffs = {}
    for site, tmap in sites.items():
        weight_key, bias_key = f"{PREFIX}{site}.weight", f"{PREFIX}{site}.bias"
        weight, bias = _current(model, current, weight_key), _current(model, current, bias_key)
        if weight is None:
            raise not_foldable(f"the model has no weight {weight_key!r} to patch", what)
        d_weight, d_bias = fold_deltas(tmap, weight, bias, strength)
        if d_bias is not None and bias is None:
            raise not_foldable(f"the model has no bias {bias_key!r} to patch", what)
        for key, diff in ((weight_key, d_weight), (bias_key, d_bias)):
            if diff is not None:
                diffs[key] = diff.to(torch.float32)
    return diffs


def fold_model(model, maps: MapSet, settings: ApplySettings, *, support: str = "unbounded"):
    """Return a clone of ``model`` with every map folded into the affine weights of its site,
    at ``settings.strength`` (settings validated by :meth:`ApplySettings.checked`).

    Exact (up to float rounding) and free at sampling time, but only when the transport is one
    fixed affine map per unit on every call: a fixed strength over the whole schedule
    (``start_percent`` 0, ``end_percent`` 1, one timestep range), both CFG halves (the halves
    share the weights), the unbounded support (a bounded one tests every value), and at every
    site a layer with affine weights whose output the map acts on elementwise: a tokens/vector
    map on a LayerNorm or Linear (a shift needs a bias), or a channel map that is a pure shift
    (omega = 1) on a GroupNorm or convolution (:mod:`act_core.fold`).

    The patches are diffs against the weights as they are at this point (the model's own
    patches included), so later patches add to the folded weights. A folded map acts inside
    its layer, so before any hooks-mode transport of the same site, whatever the order of the
    nodes. The input is not changed.

    Raises
    ------
    ValueError
        Naming the first reason the maps cannot be folded exactly, and saying to use 'hooks'.
    """
    if not settings.whole_schedule:
        raise not_foldable(f"the transport is limited to {settings.start_percent:g}-"
                           f"{settings.end_percent:g} of the schedule (folded weights act at "
                           "every step)")
    if settings.apply_to != "both":
        raise not_foldable(f"apply_to is {settings.apply_to!r} (the conditional and unconditional "
                           "halves of a CFG batch run through the same weights, so only "
                           "'both' can be folded)")
    strength = settings.strength
    diffs = weight_diffs(model, maps, strength, support=support)
    folded = model.clone()
    if strength == 0.0:
        return folded
    patches = {key: (diff,) for key, diff in diffs.items()}
    added = folded.add_patches(patches, strength_patch=1.0)
    if len(added) != len(patches):
        missing = sorted(set(patches) - set(added))
        raise not_foldable(f"the model has no weights {missing[:3]} to patch")
    log.info("AcT: folded %d maps into layer weights (strength %g)", len(maps), strength)
    return folded
