"""ActApplyTransport: patch a MODEL clone so that sampling transports its activations.

Mode ``hooks`` (default): the patch is an APPLY_MODEL wrapper (one signature for every
architecture). At each model call it reads the current sigma and the CFG layout from
``transformer_options``, picks the maps of the current timestep range, and runs the call inside
``TransportPlan.applied`` (act_core.apply), whose hooks are removed when the call returns or
raises: between calls no hook is ever left on the model. The plan (maps on the model's device,
sites resolved) is built once, at the first call.

Mode ``folded``: with a fixed strength and the unbounded support every map is one affine function
per unit, ``y = a x + c`` (``a = 1 + lambda (omega - 1)``, ``c = lambda beta``), and a site that is
the output of a norm layer with affine weights can absorb it: ``weight' = a weight``,
``bias' = a bias + c``. The clone carries this as ordinary ComfyUI weight patches, so sampling
runs no extra op at all. :func:`fold_model` refuses, with the reason, every case where that would
not be exact (see there).
"""

from __future__ import annotations

import logging

import comfy.lora
import torch
from comfy.patcher_extension import WrappersMP
from comfy_api.latest import IO
from torch import nn

from ..act_core import MapSet, check_compatible
from ..act_core.apply import TransportPlan
from ..act_core.errors import MapCompatibilityError
from ..act_core.sites import Site, find_module
from ..act_core.support import parse_support
from ..act_core.transport import fold
from .common import (
    buckets_of,
    check_strength_range,
    default_support,
    family_of,
    maps_by_bucket,
    site_width,
    sites_of,
)
from .schedule import APPLY_TO, Schedule

__all__ = ["MODES", "ActApplyTransport", "fold_model", "patch_model"]

log = logging.getLogger(__name__)
SUPPORTS = ["from maps", "minmax", "unbounded", "q0.01-0.99", "q0.05-0.95", "q0.1-0.9"]
MODES = ("hooks", "folded")
WRAPPER_KEY = "act_transport"
PREFIX = "diffusion_model."  # of the diffusion model's keys in the ModelPatcher's state dict


def _make_wrapper(buckets: list[MapSet], schedule: Schedule, support: str):
    # One TransportPlan per timestep range, built at the first call on a device: the maps are
    # moved there once and the sites resolved once, so a call only installs its hooks (no
    # host-to-device copy, no validation per call and site); rebuilt when the call runs another
    # diffusion model object or device (e.g. a torch.compile wrapper swapped it in)
    cache: dict[str, object] = {}

    def plans_for(diffusion_model, device: torch.device) -> list[TransportPlan]:
        if cache.get("model") is not diffusion_model or cache.get("device") != device:
            cache.update(model=diffusion_model, device=device, plans=[
                TransportPlan(diffusion_model,
                              {site: tmap.to(device=device) for site, tmap in bucket.items()},
                              support)
                for bucket in buckets])
        return cache["plans"]

    def act_apply_model(executor, x, t, c_concat, c_crossattn, control, transformer_options,
                        **kwargs):
        plans = plans_for(executor.class_obj.diffusion_model, x.device)
        if schedule.constant:  # no sigma needed: no wait for the device
            plan = plans[0]
        else:
            sigma = float(t.reshape(-1).max())
            if not schedule.active(sigma):
                return executor(x, t, c_concat, c_crossattn, control, transformer_options,
                                **kwargs)
            plan = plans[min(schedule.bucket(sigma), len(buckets) - 1)]
        strength = schedule.per_item(transformer_options.get("cond_or_uncond"), x.shape[0])
        with plan.applied(strength):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    return act_apply_model


def validate_maps_for_model(model, maps: MapSet) -> None:
    """Raise MapCompatibilityError naming the family, missing sites or width mismatches."""
    diffusion_model = model.get_model_object("diffusion_model")
    first = maps_by_bucket(maps)[0]
    widths = {}
    for site in sites_of(maps):
        try:
            module = find_module(diffusion_model, Site.parse(site))
        except LookupError:
            continue
        width = site_width(module)
        widths[site] = width if width is not None else first[site].dim
    check_compatible(first, widths, family_of(model))


def patch_model(model, maps: MapSet, strength: float, start_percent: float = 0.0,
                end_percent: float = 1.0, apply_to: str = "conditional",
                support: str = "from maps", mode: str = "hooks"):
    """Return a clone of ``model`` that transports activations while sampling.

    ``mode`` is ``"hooks"`` (every case) or ``"folded"`` (maps folded into the norm weights; see
    :func:`fold_model` for when that is exact, and the ValueError it raises otherwise).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if (maps.metadata.get("model") or {}).get("target") == "text_encoder":
        raise ValueError("these maps were learned on the text encoder: apply them with "
                         "AcT Apply Transport (CLIP) on the CLIP instead")
    check_strength_range(strength, maps)
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got {start_percent} and "
                         f"{end_percent}")
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")
    validate_maps_for_model(model, maps)
    chosen = default_support(maps) if support == "from maps" else support
    if mode == "folded":
        return fold_model(model, maps, strength, start_percent=start_percent,
                          end_percent=end_percent, apply_to=apply_to, support=chosen)
    sampling = model.get_model_object("model_sampling")
    n = len(buckets_of(maps))
    schedule = Schedule(
        strength=float(strength),
        sigma_start=float(sampling.percent_to_sigma(start_percent)),
        sigma_end=float(sampling.percent_to_sigma(end_percent)),
        apply_to=apply_to,
        bucket_sigmas=tuple(float(sampling.percent_to_sigma(k / n)) for k in range(1, n)),
    )
    m = model.clone()
    key = f"{WRAPPER_KEY}_{len(m.wrappers.get(WrappersMP.APPLY_MODEL, {}))}"
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, key,
                           _make_wrapper(maps_by_bucket(maps), schedule, chosen))
    return m


def _not_foldable(reason: str) -> ValueError:
    return ValueError(f"AcT Apply Transport: mode 'folded' is exact only for a fixed affine map "
                      f"per unit, and here {reason}; use mode 'hooks' (same result, applied "
                      "while sampling)")


def _fold_target(diffusion_model: nn.Module, site: str, tmap) -> nn.Module:
    """The norm module that can absorb ``tmap`` exactly; ValueError saying why not otherwise."""
    parsed = Site.parse(site)
    module = find_module(diffusion_model, parsed)
    kind = type(module).__name__
    if parsed.output_index is not None:
        raise _not_foldable(f"site {site!r} is one element of a tuple output, not a norm output")
    if not isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
        raise _not_foldable(f"site {site!r} is a {kind}, not a GroupNorm or LayerNorm whose "
                            "affine weights could absorb the map")
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise _not_foldable(f"site {site!r} ({kind}) has no affine weight and bias to fold into")
    if isinstance(module, nn.GroupNorm):
        if tmap.mode != "channels":
            raise _not_foldable(f"site {site!r} is a GroupNorm but its map is in "
                                f"{tmap.mode!r} mode, not 'channels'")
        if not bool(torch.all(tmap.scale == 1.0)):
            raise _not_foldable(
                f"the map of site {site!r} ({tmap.method}) acts on channel means with "
                "omega != 1: each channel is shifted by an amount that depends on its mean in "
                "the current image, which no fixed weight can do (only pure shifts, e.g. "
                "mean_act or diff_means maps, fold on a GroupNorm)")
    elif tmap.mode not in ("tokens", "vector"):
        raise _not_foldable(f"site {site!r} is a LayerNorm but its map is in {tmap.mode!r} "
                            "mode; only elementwise (tokens/vector) maps fold into it")
    if weight.shape[-1] != tmap.dim or (isinstance(module, nn.GroupNorm)
                                        and weight.shape != (tmap.dim,)):
        raise _not_foldable(f"site {site!r} has affine weights of shape {tuple(weight.shape)} "
                            f"but the map has D={tmap.dim}")
    return module


def fold_model(model, maps: MapSet, strength: float, *, start_percent: float = 0.0,
               end_percent: float = 1.0, apply_to: str = "both", support: str = "unbounded"):
    """Return a clone of ``model`` with every map folded into the affine weights of its norm.

    Exact (up to float rounding) and free at sampling time, but only when the transport is one
    fixed affine map per unit on every call: a fixed strength over the whole schedule
    (``start_percent`` 0, ``end_percent`` 1, one timestep range), both CFG halves (the halves
    share the weights), the unbounded support (a bounded one tests every value), and at every
    site a GroupNorm/LayerNorm with affine weight and bias whose output the map acts on
    elementwise: a tokens/vector map on a LayerNorm, or a channel map that is a pure shift
    (omega = 1) on a GroupNorm. A channel-mean map with omega != 1 is not foldable: the shift it
    gives a channel depends on that channel's mean in the current image.

    The patches are diffs against the weights as they are at this point (the model's own
    patches included), so later patches add to the folded weights. A folded map acts inside
    its norm, so before any hooks-mode transport of the same site, whatever the order of the
    nodes. The input is not changed.

    Raises
    ------
    ValueError
        Naming the first reason the maps cannot be folded exactly, and saying to use 'hooks'.
    """
    if len(buckets_of(maps)) != 1:
        raise _not_foldable(f"the maps have {len(buckets_of(maps))} timestep ranges (per-step "
                            "maps change during sampling; folded weights cannot)")
    if start_percent != 0.0 or end_percent != 1.0:
        raise _not_foldable(f"the transport is limited to {start_percent:g}-{end_percent:g} of "
                            "the schedule (folded weights act at every step)")
    if apply_to != "both":
        raise _not_foldable(f"apply_to is {apply_to!r} (the conditional and unconditional "
                            "halves of a CFG batch run through the same weights, so only "
                            "'both' can be folded)")
    if parse_support(support).kind != "unbounded":
        raise _not_foldable(f"the support is {support!r} (a bounded support transports a value "
                            "only inside its range; only 'unbounded' is one affine map)")
    diffusion_model = model.get_model_object("diffusion_model")
    targets = {site: (_fold_target(diffusion_model, site, tmap), tmap)
               for site, tmap in maps_by_bucket(maps)[0].items()}
    folded = model.clone()
    if float(strength) == 0.0:
        return folded
    current = model.get_key_patches(PREFIX)  # key -> [(weight, convert), *patches]
    patches = {}
    for site, (_module, tmap) in targets.items():
        scale, offset = fold(tmap, float(strength), torch.float64)  # a, c: (D,), on the CPU
        for name, add in (("weight", None), ("bias", offset)):
            key = f"{PREFIX}{site}.{name}"
            if key not in current:
                raise _not_foldable(f"the model has no weight {key!r} to patch")
            weight, convert = current[key][0]  # unpatched, as the patcher holds it
            value = convert(weight.to(torch.float32, copy=True), inplace=True)
            if len(current[key]) > 1:  # the model's own patches of this weight, applied
                value = comfy.lora.calculate_weight(current[key][1:], value, key)
            value = value.to("cpu", torch.float64)
            diff = (scale - 1.0) * value + (0.0 if add is None else add)  # a w + c - w
            patches[key] = (diff.to(torch.float32),)
    added = folded.add_patches(patches, strength_patch=1.0)
    if len(added) != len(patches):
        missing = sorted(set(patches) - set(added))
        raise _not_foldable(f"the model has no weights {missing[:3]} to patch")
    log.info("AcT: folded %d maps into norm weights (strength %g)", len(targets), strength)
    return folded


class ActApplyTransport(IO.ComfyNode):
    """Apply transport maps to a MODEL with a strength lambda (0 = unchanged, 1 = target)."""

    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActApplyTransport",
            display_name="AcT Apply Transport",
            category="AcT",
            description=("Patches a copy of the model so that, while sampling, the activations "
                         "at the maps' sites are transported with strength lambda: 0 leaves "
                         "the model as it is, 1 makes them distributed like the target prompts "
                         "(e.g. fully 'striped', or no 'black dot'), values in between "
                         "interpolate. The input model is never changed; chain several to "
                         "combine maps."),
            search_aliases=["activation transport", "act", "steer", "concept slider",
                            "style strength", "negation"],
            inputs=[
                IO.Model.Input("model",
                               tooltip="The model to steer (it is cloned, never changed)."),
                IO.Custom("ACT_MAPS").Input(
                    "maps", tooltip="Transport maps from AcT Learn Transport or AcT Load Maps."),
                IO.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Lambda: 0 = the model as it is, 1 = activations "
                                       "distributed like the target prompts. Up to 2 "
                                       "extrapolates; larger values are allowed only for "
                                       "diff_means maps (an unbounded steering vector)."),
                IO.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling schedule at which transport "
                                       "starts (0 = first step)."),
                IO.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule at which it stops (1 = last "
                                       "step)."),
                IO.Combo.Input("apply_to", options=list(APPLY_TO), default="conditional",
                               tooltip="Which half of the CFG batch to transport. conditional "
                                       "(default): the positive prediction only, the half the "
                                       "maps were learned on, so CFG amplifies the change like "
                                       "it amplifies the prompt. both: with CFG the change of "
                                       "the two halves largely cancels (a weak effect); "
                                       "unconditional: the negative only."),
                IO.Combo.Input("support", options=SUPPORTS, default="from maps",
                               tooltip="Where the map acts: 'minmax' only on values inside the "
                                       "source range (good for removing a concept), "
                                       "'unbounded' everywhere (good for adding a style), "
                                       "quantiles in between. 'from maps' uses the choice "
                                       "recorded when the maps were learned.", advanced=True),
                IO.Combo.Input("mode", options=list(MODES), default="hooks", advanced=True,
                               optional=True,
                               tooltip="hooks (default): transport while sampling, works in "
                                       "every case. folded: fold the maps into the norm "
                                       "layers' weights once, so sampling costs nothing extra; "
                                       "exact only with the unbounded support, apply_to both, "
                                       "the whole schedule, one timestep range and maps that "
                                       "act elementwise (LayerNorm sites, or pure shifts such "
                                       "as mean_act on GroupNorm sites). Otherwise it stops "
                                       "with the reason."),
            ],
            outputs=[IO.Model.Output(tooltip="The patched copy of the model.")],
        )

    @classmethod
    def execute(cls, model, maps, strength, start_percent, end_percent, apply_to,
                support, mode="hooks") -> IO.NodeOutput:
        try:
            return IO.NodeOutput(patch_model(model, maps, strength, start_percent, end_percent,
                                             apply_to, support, mode))
        except MapCompatibilityError as error:
            raise ValueError(f"AcT Apply Transport: {error}") from error
