"""ActSliderPanel: several map sets on one MODEL, each with its strength, label, curve, range.

The node only translates its widgets into :class:`nodes.panel.Slider` values; the patch and its
meaning (sequential in panel order, bit-identical to chained AcT Apply Transport nodes) are in
:mod:`nodes.panel`, the curves in :mod:`act_core.curves`.
"""

from __future__ import annotations

import logging

from comfy_api.latest import IO

from ..act_core.curves import Curve, CurveError, parse_keyframes
from ..act_core.errors import MapCompatibilityError
from ..act_core.schedule import APPLY_TO
from ..act_core.strength import MAX_STRENGTH
from ..act_core.support import FROM_MAPS
from .apply import SUPPORTS
from .panel import Slider, patch_panel, slider_strength_at
from .slider_chart import curves_image

__all__ = ["CURVES", "SLOTS", "ActSliderPanel", "curve_of", "curve_of_hook_keyframes"]

log = logging.getLogger(__name__)
SLOTS = 4
CURVES = ("constant", "ramp up", "ramp down", "front-loaded", "late", "keyframes",
          "hold keyframes")
_NAMED = {"constant": Curve(), "ramp up": Curve("linear", start=0.0, end=1.0),
          "ramp down": Curve("linear", start=1.0, end=0.0), "front-loaded": Curve("front"),
          "late": Curve("late")}


def curve_of(name: str, keyframes: str = "") -> Curve:
    """The Curve of a ``curve`` widget value (``keyframes`` text for the two keyframe kinds)."""
    if name in _NAMED:
        return _NAMED[name]
    if name in ("keyframes", "hold keyframes"):
        kind = "keyframes" if name == "keyframes" else "hold"
        return Curve(kind, points=parse_keyframes(keyframes))
    raise ValueError(f"curve must be one of {CURVES}, got {name!r}")


def curve_of_hook_keyframes(group) -> Curve:
    """ComfyUI's HOOK_KEYFRAMES value (a ``HookKeyframeGroup``) as a ``hold`` curve: each
    keyframe's strength from its start percent on, the first one's before it, as ComfyUI's hooks
    apply them (``guarantee_steps`` is not counted: keyframes switch on progress alone). An
    empty group is the constant curve; of keyframes with the same start, the last one counts."""
    points = {float(k.start_percent): float(k.strength) for k in group.keyframes}
    if not points:
        return Curve()
    return Curve("hold", points=tuple(sorted(points.items())))


def _slot_inputs(i: int) -> list:
    return [
        IO.Custom("ACT_MAPS").Input(
            f"maps_{i}", optional=True,
            tooltip=f"Slider {i}: maps from AcT Learn Transport or AcT Load Maps (leave "
                    "unconnected for an unused slider)."),
        IO.String.Input(f"label_{i}", default=f"slider {i}", optional=True,
                        tooltip=f"Slider {i}: a name, shown in the plot and in warnings."),
        IO.Float.Input(f"strength_{i}", default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05,
                       optional=True,
                       tooltip=f"Slider {i}: lambda, 0 = off, 1 = distributed like the "
                               "target prompts; up to 2 extrapolates (diff_means maps: "
                               "up to 10)."),
        IO.Combo.Input(f"curve_{i}", options=list(CURVES), default="constant", optional=True,
                       tooltip=f"Slider {i}: how the strength changes over the steps "
                               "(multiplies it): constant; ramp up 0 -> 1; ramp down 1 -> 0; "
                               "front-loaded cos^2 (strong first, fading); late sin^2; "
                               "keyframes: linear between the keyframes_N points; hold "
                               "keyframes: each value held until the next point, as ComfyUI's "
                               "hook keyframes do."),
        IO.Float.Input(f"start_percent_{i}", default=0.0, min=0.0, max=1.0, step=0.01,
                       optional=True,
                       tooltip=f"Slider {i}: progress at which it starts (0 = first step)."),
        IO.Float.Input(f"end_percent_{i}", default=1.0, min=0.0, max=1.0, step=0.01,
                       optional=True,
                       tooltip=f"Slider {i}: progress at which it stops (1 = last step)."),
        IO.String.Input(f"keyframes_{i}", default="0:0, 0.5:1, 1:1", optional=True,
                        advanced=True,
                        tooltip=f"Slider {i}, curve keyframes / hold keyframes: "
                                "'percent:value' pairs, e.g. '0:1, 0.5:0' (progress 0 = "
                                "first step, 1 = last)."),
        IO.HookKeyframes.Input(f"hook_keyframes_{i}", optional=True,
                               tooltip=f"Slider {i}, optional: ComfyUI hook keyframes (from "
                                       "the Create Hook Keyframe nodes) as its curve, in "
                                       "place of curve_N: each keyframe's strength from its "
                                       "start percent on."),
    ]


def _curve_of_slot(slots: dict, i: int) -> Curve:
    hooks = slots.get(f"hook_keyframes_{i}")
    if hooks is not None:
        return curve_of_hook_keyframes(hooks)
    return curve_of(slots.get(f"curve_{i}", "constant"), slots.get(f"keyframes_{i}", ""))


class ActSliderPanel(IO.ComfyNode):
    """Several transport-map sliders applied to a MODEL as one patch."""

    @classmethod
    def define_schema(cls) -> IO.Schema:
        inputs = [IO.Model.Input("model",
                                 tooltip="The model to steer (it is cloned, never changed).")]
        for i in range(1, SLOTS + 1):
            inputs += _slot_inputs(i)
        inputs += [
            IO.Combo.Input("apply_to", options=list(APPLY_TO), default="conditional",
                           optional=True,
                           tooltip="Which half of the CFG batch every slider transports "
                                   "(conditional: the half the maps were learned on)."),
            IO.Combo.Input("support", options=SUPPORTS, default=FROM_MAPS, optional=True,
                           advanced=True,
                           tooltip="Where the maps act, for every slider ('from maps': each "
                                   "map set's own recorded choice)."),
        ]
        return IO.Schema(
            node_id="ActSliderPanel",
            display_name="AcT Slider Panel",
            category="AcT",
            description=("Up to four map sets on one model, each with its own strength, "
                         "label, curve over the steps and start/end range, applied as one "
                         "patch. They act one after the other at every site, slider 1 first, "
                         "exactly like chained AcT Apply Transport nodes in the same order "
                         "(same images, bit for bit). Warns when two sliders push the same "
                         "units in opposite directions."),
            search_aliases=["sliders", "slider panel", "multi lora", "stack", "act",
                            "activation transport", "strength schedule", "keyframes"],
            inputs=inputs,
            outputs=[IO.Model.Output(tooltip="The patched copy of the model."),
                     IO.Image.Output(display_name="curves",
                                     tooltip="Each slider's strength over the sampling "
                                             "progress; connect a Preview Image node."),
                     IO.String.Output(display_name="report",
                                      tooltip="The sliders and any conflict between them.")],
        )

    @classmethod
    def execute(cls, model, apply_to="conditional", support=FROM_MAPS,
                **slots) -> IO.NodeOutput:
        sliders = []
        try:
            for i in range(1, SLOTS + 1):
                maps = slots.get(f"maps_{i}")
                if maps is None:
                    continue
                label = str(slots.get(f"label_{i}") or f"slider {i}")
                sliders.append(Slider(
                    maps=maps, strength=float(slots.get(f"strength_{i}", 1.0)), label=label,
                    curve=_curve_of_slot(slots, i),
                    start_percent=float(slots.get(f"start_percent_{i}", 0.0)),
                    end_percent=float(slots.get(f"end_percent_{i}", 1.0)), support=support))
            patched, conflicts = patch_panel(model, sliders, apply_to)
        except (MapCompatibilityError, CurveError) as error:
            raise ValueError(f"AcT Slider Panel: {error}") from error
        lines = [f"{s.label}: strength {s.strength:g}, curve {s.curve.kind}, "
                 f"{s.start_percent:g}-{s.end_percent:g}" for s in sliders] or ["no sliders"]
        lines += [f"WARNING: {c.message()}" for c in conflicts]
        report = "\n".join(lines)
        image = curves_image([(s.label, lambda p, s=s: slider_strength_at(s, p))
                              for s in sliders])
        return IO.NodeOutput(patched, image, report, ui={"text": (report,)})
