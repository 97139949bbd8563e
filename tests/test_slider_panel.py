"""AcT Slider Panel on a tiny random-weight SDXL through ComfyUI's own sampling path.

Several map sets as one patch must sample exactly what chained AcT Apply Transport nodes sample
(same order, bit for bit), strength 0 everywhere must be the plain model, curves must act on the
steps they name, conflicting sliders must be reported, and nothing may stay on the model.
The tiny SDXL recipe and CONDITIONING builders are those of tests/test_nodes_tiny_models.py.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from act_core.patch import interventions
from harness import tiny_families

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]
STEPS, CFG, SEED = 4, 2.0, 7


@pytest.fixture(scope="module")
def nodes(act_pack):
    name = act_pack.__name__
    return SimpleNamespace(**{part: importlib.import_module(f"{name}.nodes.{part}")
                              for part in ("learn", "apply", "panel", "sliders")})


@pytest.fixture(scope="module")
def tiny(act_pack, nodes):
    recipes = tiny_families
    recipe, patcher = recipes.build("sdxl")
    model = patcher.model
    gen = torch.Generator().manual_seed(1)
    source = recipes.conds(recipe, 3, gen)
    up, down = recipes.conds(recipe, 3, gen, shift=0.5), recipes.conds(recipe, 3, gen,
                                                                          shift=-0.8)
    (positive,), (negative,) = recipes.conds(recipe, 1, gen), recipes.conds(recipe, 1, gen)
    latent = torch.zeros(1, recipe.latent_channels, 8, 8)
    learn = nodes.learn.learn_maps
    a = learn(patcher, source, up, support="unbounded", latent={"samples": latent}, seed=3)
    b = learn(patcher, source, down, support="minmax", latent={"samples": latent}, seed=4)
    return SimpleNamespace(model=patcher, diffusion_model=model.diffusion_model, a=a, b=b,
                           positive=positive, negative=negative, latent=latent)


def _sample(model, tiny) -> torch.Tensor:
    import comfy.sample

    noise = comfy.sample.prepare_noise(tiny.latent, SEED)
    out = comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", tiny.positive,
                              tiny.negative, tiny.latent, seed=SEED, disable_pbar=True)
    left = interventions(tiny.diffusion_model)
    left.pop("", None)  # the probe's own pre-hook on the whole model, where one is set
    assert not left  # nothing left once sampling returns
    return out


def _chained(nodes, tiny, settings):
    model = tiny.model
    for maps, kwargs in settings:
        model = nodes.apply.patch_model(model, maps, **kwargs)
    return model


def _panel(nodes, tiny, settings, apply_to="conditional"):
    sliders = [nodes.panel.Slider(maps, kwargs["strength"],
                                  start_percent=kwargs.get("start_percent", 0.0),
                                  end_percent=kwargs.get("end_percent", 1.0))
               for maps, kwargs in settings]
    return nodes.panel.patch_panel(tiny.model, sliders, apply_to)[0]


@pytest.mark.parametrize("case", ["whole", "ranges"])
def test_panel_samples_what_chained_apply_nodes_sample(nodes, tiny, case):
    if case == "whole":
        settings = [(tiny.a, dict(strength=1.0)), (tiny.b, dict(strength=0.6))]
    else:  # a range makes the wrappers read sigma; the order is reversed too
        settings = [(tiny.b, dict(strength=1.0, start_percent=0.3)),
                    (tiny.a, dict(strength=0.8, end_percent=0.6))]
    chained = _sample(_chained(nodes, tiny, settings), tiny)
    panel = _sample(_panel(nodes, tiny, settings), tiny)
    assert torch.equal(panel, chained)
    assert not torch.equal(panel, _sample(tiny.model, tiny))  # the sliders did act
    swapped = _sample(_panel(nodes, tiny, settings[::-1]), tiny)
    assert not torch.equal(swapped, panel)  # order is part of the meaning


def test_zero_strengths_are_the_plain_model(nodes, tiny):
    settings = [(tiny.a, dict(strength=0.0)), (tiny.b, dict(strength=0.0))]
    patched = _panel(nodes, tiny, settings)
    assert torch.equal(_sample(patched, tiny), _sample(tiny.model, tiny))


def test_one_patch_per_module_while_sampling(nodes, tiny):
    seen = []
    handle = tiny.diffusion_model.register_forward_pre_hook(
        lambda module, args: seen.append(sum(interventions(tiny.diffusion_model).values())))
    try:
        settings = [(tiny.a, dict(strength=1.0)), (tiny.b, dict(strength=1.0))]
        _sample(_panel(nodes, tiny, settings), tiny)
        panel_counts = list(seen)
        seen.clear()
        _sample(_chained(nodes, tiny, settings), tiny)
    finally:
        handle.remove()
    sites = len(set(tiny.a) | set(tiny.b))
    # the pre-hook itself counts 1; cond and uncond run as one batch: one call per step
    assert panel_counts == [1 + sites] * STEPS
    assert seen == [1 + len(tiny.a) + len(tiny.b)] * STEPS


def test_hold_keyframes_equal_an_end_percent(nodes, tiny):
    """'hold keyframes 0:1, 0.5:0' switches the slider off where end_percent 0.5 does."""
    curve = nodes.sliders.curve_of("hold keyframes", "0:1, 0.5:0")
    held = nodes.panel.Slider(tiny.a, 1.0, curve=curve)
    ranged = nodes.panel.patch_panel(tiny.model, [nodes.panel.Slider(
        tiny.a, 1.0, end_percent=0.5)])[0]
    first = _sample(nodes.panel.patch_panel(tiny.model, [held])[0], tiny)
    assert torch.equal(first, _sample(ranged, tiny))
    # ComfyUI's own hook keyframes (Create Hook Keyframe: strength 1 at 0, 0 from 0.5) give
    # the same curve
    import comfy.hooks

    group = comfy.hooks.HookKeyframeGroup()
    group.add(comfy.hooks.HookKeyframe(strength=0.0, start_percent=0.5))
    group.add(comfy.hooks.HookKeyframe(strength=1.0, start_percent=0.0))
    assert nodes.sliders.curve_of_hook_keyframes(group) == curve
    late = nodes.panel.Slider(tiny.a, 1.0, curve=nodes.sliders.curve_of("late"))
    late_out = _sample(nodes.panel.patch_panel(tiny.model, [late])[0], tiny)
    assert not torch.equal(late_out, first)
    assert not torch.equal(late_out, _sample(tiny.model, tiny))


def test_node_reports_conflicts_and_draws_the_curves(nodes, tiny, caplog):
    from act_core import MapSet

    back = MapSet({site: tmap.inverse() for site, tmap in tiny.a.items()}, tiny.a.metadata)
    out = nodes.sliders.ActSliderPanel.execute(
        tiny.model, maps_1=tiny.a, label_1="warmer", strength_1=1.0, curve_1="front-loaded",
        maps_3=back, label_3="colder", strength_3=0.5, curve_3="keyframes",
        keyframes_3="0:0, 1:1", start_percent_3=0.2)
    patched, image, report = out.args
    assert patched is not tiny.model and not tiny.model.wrappers.get("apply_model")
    assert "'warmer' and 'colder' fight" in report and "WARNING" in report
    assert image.shape[0] == 1 and image.shape[-1] == 3 and image.dtype == torch.float32
    assert float(image.std()) > 0.01  # something is drawn
    assert "fight" in caplog.text
    with pytest.raises(ValueError, match="increasing"):
        nodes.sliders.ActSliderPanel.execute(tiny.model, maps_1=tiny.a, curve_1="keyframes",
                                             keyframes_1="0.5:1, 0.2:0")
