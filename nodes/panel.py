"""Several sliders (map sets with their own strength, curve and range) as one MODEL patch.

Meaning (act_core.compose): the sliders act sequentially in panel order at every site, slider 1
first: ``T_2(T_1(x))``. That is what chained AcT Apply Transport nodes do, the first node of the
chain acting first (its APPLY_MODEL wrapper is the outer one, so its patch is installed first and
the later ones wrap it). The panel gives the same samples bit for bit, with one patched forward
per site module and one wrapper instead of one per slider.

Per slider and model call: outside its start/end percent the slider is off; inside, its
strength is ``strength * curve(p)`` on the CFG half chosen by ``apply_to``, with ``p`` the
sampling progress of the current sigma (ComfyUI's percent, as in its hook keyframes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from comfy.patcher_extension import WrappersMP

from ..act_core import MapSet
from ..act_core.apply import TransportPlan
from ..act_core.compose import ComposedPlan, Conflict, find_conflicts
from ..act_core.curves import Curve, SigmaProgress
from ..act_core.schedule import ApplySettings
from ..act_core.support import FROM_MAPS, resolve_support
from .apply import validate_maps_for_model
from .common import buckets_of, maps_by_bucket
from .schedule import Schedule

__all__ = ["WRAPPER_KEY", "Slider", "patch_panel", "slider_strength_at"]

log = logging.getLogger(__name__)
WRAPPER_KEY = "act_slider_panel"


@dataclass(frozen=True)
class Slider:
    """One slider of the panel: a map set with its strength, label, curve and range."""

    maps: MapSet
    strength: float = 1.0
    label: str = ""
    curve: Curve = field(default_factory=Curve)
    start_percent: float = 0.0
    end_percent: float = 1.0
    support: str = FROM_MAPS

    def check(self, model, apply_to: str = "both") -> ApplySettings:
        """The slider's settings; ValueError (with the fix) for what AcT Apply Transport would
        refuse."""
        if (self.maps.metadata.get("model") or {}).get("target") == "text_encoder":
            raise ValueError(f"slider {self.label!r}: these maps were learned on the text "
                             "encoder: apply them with AcT Apply Transport (CLIP) on the CLIP")
        settings = ApplySettings.checked(self.maps, self.strength, self.start_percent,
                                         self.end_percent, apply_to, f"slider {self.label!r}")
        validate_maps_for_model(model, self.maps)
        return settings


def slider_strength_at(slider: Slider, percent: float) -> float:
    """The slider's strength at progress ``percent`` (0 outside its range), for plots."""
    if not slider.start_percent <= percent <= slider.end_percent:
        return 0.0
    return slider.strength * slider.curve(percent)


def _make_wrapper(sliders: list[Slider], schedules: list[Schedule],
                  progress: SigmaProgress | None):
    buckets = [maps_by_bucket(s.maps) for s in sliders]
    supports = [resolve_support(s.support, [s.maps.support]) for s in sliders]
    fixed = all(s.constant for s in schedules) and all(s.curve.constant for s in sliders)
    cache: dict[str, object] = {}

    def composed_for(diffusion_model, device: torch.device, choice: tuple) -> ComposedPlan:
        # plans as AcT Apply Transport builds them (maps moved to the device once, sites
        # resolved once), one per slider and timestep range; one ComposedPlan per combination
        if cache.get("model") is not diffusion_model or cache.get("device") != device:
            cache.update(model=diffusion_model, device=device, composed={}, plans=[
                [TransportPlan(diffusion_model,
                               {site: tmap.to(device=device) for site, tmap in part.items()},
                               support) for part in parts]
                for parts, support in zip(buckets, supports)])
        composed = cache["composed"].get(choice)
        if composed is None:
            plans = cache["plans"]
            composed = ComposedPlan([plans[i][b] for i, b in enumerate(choice) if b is not None])
            cache["composed"][choice] = composed
        return composed

    def act_slider_panel(executor, x, t, c_concat, c_crossattn, control, transformer_options,
                         **kwargs):
        layout = transformer_options.get("cond_or_uncond")
        sigma = None if fixed else float(t.reshape(-1).max())
        choice, strengths = [], []
        for i, (slider, schedule) in enumerate(zip(sliders, schedules)):
            if sigma is None:
                choice.append(0)
                strengths.append(schedule.per_item(layout, x.shape[0]))
                continue
            if not schedule.active(sigma):
                choice.append(None)
                continue
            choice.append(min(schedule.bucket(sigma), len(buckets[i]) - 1))
            value = None
            if not slider.curve.constant:
                value = schedule.strength * slider.curve(progress(sigma))
            strengths.append(schedule.per_item(layout, x.shape[0], value))
        if not strengths:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        plan = composed_for(executor.class_obj.diffusion_model, x.device, tuple(choice))
        with plan.applied(strengths):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    return act_slider_panel


def patch_panel(model, sliders: list[Slider],
                apply_to: str = "conditional") -> tuple[object, list[Conflict]]:
    """Return a clone of ``model`` with the sliders applied as one patch, and the conflicts
    between their maps (also logged; :func:`act_core.compose.find_conflicts`).

    Sliders with strength 0 are left out. Raises ValueError for an invalid slider.
    """
    checked = [(slider, slider.check(model, apply_to)) for slider in sliders]
    checked = [(slider, settings) for slider, settings in checked if settings.strength != 0]
    active = [slider for slider, _ in checked]
    conflicts = find_conflicts([maps_by_bucket(s.maps)[0] for s in active],
                               [s.label or str(i + 1) for i, s in enumerate(active)])
    m = model.clone()
    if not active:
        return m, conflicts
    sampling = model.get_model_object("model_sampling")
    schedules = [Schedule.of(settings, sampling, len(buckets_of(slider.maps)))
                 for slider, settings in checked]
    progress = None
    if not all(s.curve.constant for s in active):
        progress = SigmaProgress(lambda p: float(sampling.percent_to_sigma(p)))
    key = f"{WRAPPER_KEY}_{len(m.wrappers.get(WrappersMP.APPLY_MODEL, {}))}"
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, key,
                           _make_wrapper(active, schedules, progress))
    return m, conflicts
