"""ActApplyTransport: patch a MODEL clone so that sampling transports its activations.

Mode ``hooks`` (default): the patch is an APPLY_MODEL wrapper (one signature for every
architecture). At each model call it reads the current sigma and the CFG layout from
``transformer_options``, picks the maps of the current timestep range, and runs the call inside
``TransportPlan.applied`` (act_core.apply), whose hooks are removed when the call returns or
raises: between calls no hook is ever left on the model. The plan (maps on the model's device,
sites resolved) is built once, at the first call.

Mode ``folded``: with a fixed strength and the unbounded support every map is one affine function
per unit, ``y = a x + c`` (``a = 1 + lambda (omega - 1)``, ``c = lambda beta``), and a site that is
the output of a layer with affine weights (a norm, a linear layer) can absorb it:
``weight' = a weight``, ``bias' = a bias + c``. The clone carries this as ordinary ComfyUI weight
patches, so sampling runs no extra op at all. :func:`nodes.fold.fold_model` refuses, with the
reason, every case where that would not be exact.
"""

from __future__ import annotations

import logging

import torch
from comfy.patcher_extension import WrappersMP
from comfy_api.latest import IO

from ..act_core import MapSet, check_compatible
from ..act_core.apply import TransportPlan
from ..act_core.errors import MapCompatibilityError, MapError
from ..act_core.gate import GATE_CHOICES, is_gated, select_gate
from ..act_core.schedule import APPLY_TO, ApplySettings
from ..act_core.sites import site_widths
from ..act_core.strength import MAX_STRENGTH
from ..act_core.support import FROM_MAPS, resolve_support
from .common import (
    buckets_of,
    drop_cached_state,
    family_of,
    maps_by_bucket,
    sites_of,
)
from .fold import fold_model
from .schedule import Schedule

__all__ = ["MODES", "ActApplyTransport", "describe_gates", "fold_model", "patch_model"]

log = logging.getLogger(__name__)
SUPPORTS = [FROM_MAPS, "minmax", "unbounded", "q0.01-0.99", "q0.05-0.95", "q0.1-0.9"]
MODES = ("hooks", "folded")
WRAPPER_KEY = "act_transport"
#: Gate used when the maps carry one (docs/results_gate.md measures both).
DEFAULT_GATE = "learned"


def _make_wrapper(buckets: list[MapSet], schedule: Schedule, support: str, gated: bool = False):
    # One TransportPlan per timestep range, built at the first call on a device: the maps are
    # moved there once and the sites resolved once, so a call only installs its hooks (no
    # host-to-device copy, no validation per call and site); rebuilt when the call runs another
    # diffusion model object or device (e.g. a torch.compile wrapper swapped it in)
    cache: dict[str, object] = {}
    # gated maps: each image's gate is decided at the first step the maps act on (the noisiest,
    # where the gate was learned) and kept until sigma rises again (a new sampling run)
    held: dict = {"sigma": None, "states": {}}

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
        diffusion_model = executor.class_obj.diffusion_model
        plans = plans_for(diffusion_model, x.device)
        if schedule.constant:  # no sigma needed: no wait for the device
            plan = plans[0]
        else:
            sigma = float(t.reshape(-1).max())
            if not schedule.active(sigma):
                return executor(x, t, c_concat, c_crossattn, control, transformer_options,
                                **kwargs)
            plan = plans[min(schedule.bucket(sigma), len(buckets) - 1)]
        layout = transformer_options.get("cond_or_uncond")
        strength = schedule.per_item(layout, x.shape[0])
        states = None
        if gated:
            sigma = float(t.reshape(-1).max())
            if held["sigma"] is None or sigma > held["sigma"]:
                held["states"] = {}
            held["sigma"] = sigma
            states = held["states"].setdefault((tuple(layout or ()), x.shape[0]), {})
        deciding = gated and not states  # the first call of a run decides every image's gate
        drop_cached_state(diffusion_model)  # no plain run's cached prompt keys/values
        try:
            with plan.applied(strength, states):
                out = executor(x, t, c_concat, c_crossattn, control, transformer_options,
                               **kwargs)
            if deciding and (line := describe_gates(states, strength, layout)):
                log.info("%s", line)
            return out
        finally:
            drop_cached_state(diffusion_model)  # nor this call's for a plain run

    return act_apply_model


def describe_gates(states: dict, strength: float | torch.Tensor,
                   layout: list[int] | None = None) -> str:
    """One log line per sampling run: for each transported image, the mean over the gated sites
    of its gate g in [0, 1] and at how many sites g > 0, decided at the run's first step, so a
    user can see which images the maps left alone ("" when the call transported no image, e.g.
    a CFG half of its own). ``layout``: ComfyUI's ``cond_or_uncond`` (1 marks the uncond half)."""
    held = [state["held"] for state in states.values()
            if isinstance(state.get("held"), torch.Tensor)]
    if not held:
        return ""
    g = torch.stack([h.float().reshape(h.shape[0], -1).mean(1).cpu() for h in held])  # (S, B)
    batch, chunks = g.shape[1], list(layout or [0])
    per = max(batch // len(chunks), 1)
    labels = [f"image {i % per + 1}" + (" (uncond)" if chunks[min(i // per, len(chunks) - 1)]
                                        == 1 else "") for i in range(batch)]
    keep = (strength.reshape(-1).cpu() != 0 if isinstance(strength, torch.Tensor)
            else torch.ones(batch, dtype=torch.bool))  # only the items the maps act on
    parts = [f"{label}: {mean:.2f} mean, open at {int(n)}/{g.shape[0]} sites"
             + (" (left as it is)" if n == 0 else "")
             for label, mean, n, k in zip(labels, g.mean(0).tolist(), (g > 0).sum(0).tolist(),
                                          keep.tolist(), strict=True) if k]
    return "AcT gate, decided at the first step: " + "; ".join(parts) if parts else ""


def validate_maps_for_model(model, maps: MapSet) -> None:
    """Raise MapCompatibilityError naming the family, missing sites or width mismatches."""
    diffusion_model = model.get_model_object("diffusion_model")
    first = maps_by_bucket(maps)[0]
    check_compatible(first, site_widths(diffusion_model, sites_of(maps), first),
                     family_of(model))


def patch_model(model, maps: MapSet, strength: float, start_percent: float = 0.0,
                end_percent: float = 1.0, apply_to: str = "conditional",
                support: str = FROM_MAPS, mode: str = "hooks", gate: str = DEFAULT_GATE):
    """Return a clone of ``model`` that transports activations while sampling.

    ``mode`` is ``"hooks"`` (every case) or ``"folded"`` (maps folded into the norm weights; see
    :func:`fold_model` for when that is exact, and the ValueError it raises otherwise).
    ``gate`` is ``"learned"`` (the maps' gates scale the strength per image, when they carry
    one) or ``"off"`` (every image transported; :mod:`act_core.gate`).
    """
    maps = select_gate(maps, gate)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if (maps.metadata.get("model") or {}).get("target") == "text_encoder":
        raise ValueError("these maps were learned on the text encoder: apply them with "
                         "AcT Apply Transport (CLIP) on the CLIP instead")
    settings = ApplySettings.checked(maps, strength, start_percent, end_percent, apply_to)
    validate_maps_for_model(model, maps)
    chosen = resolve_support(support, [maps.support])
    if mode == "folded":
        return fold_model(model, maps, settings, support=chosen)
    schedule = Schedule.of(settings, model.get_model_object("model_sampling"),
                           len(buckets_of(maps)))
    m = model.clone()
    key = f"{WRAPPER_KEY}_{len(m.wrappers.get(WrappersMP.APPLY_MODEL, {}))}"
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, key,
                           _make_wrapper(maps_by_bucket(maps), schedule, chosen,
                                         is_gated(maps)))
    return m


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
                IO.Float.Input("strength", default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05,
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
                IO.Combo.Input("support", options=SUPPORTS, default=FROM_MAPS,
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
                                       "act elementwise (LayerNorm and Linear sites, or pure "
                                       "shifts such as mean_act on GroupNorm sites). Otherwise "
                                       "it stops with the reason. AcT Export LoRA writes the "
                                       "same change as a LoRA file."),
                IO.Combo.Input("gate", options=list(GATE_CHOICES), default=DEFAULT_GATE,
                               optional=True,
                               tooltip="For maps learned with a gate (AcT Learn Transport, "
                                       "gate = learned): learned scales the strength by how "
                                       "much each image looks like the source prompts, so "
                                       "images without the concept stay as they are; off "
                                       "transports every image. Maps without a gate are "
                                       "applied as they are. The console shows, per run, "
                                       "each image's gate (0: left as it is)."),
            ],
            outputs=[IO.Model.Output(tooltip="The patched copy of the model.")],
        )

    @classmethod
    def execute(cls, model, maps, strength, start_percent, end_percent, apply_to,
                support, mode="hooks", gate=DEFAULT_GATE) -> IO.NodeOutput:
        try:
            return IO.NodeOutput(patch_model(model, maps, strength, start_percent, end_percent,
                                             apply_to, support, mode, gate))
        except (MapCompatibilityError, MapError) as error:
            raise ValueError(f"AcT Apply Transport: {error}") from error
