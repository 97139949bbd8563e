"""Apply settings (act_core.schedule): lambda validated once against the maps' range, the
schedule range, and the strength per item of a CFG batch; the nodes' schemas use the same bound."""

from __future__ import annotations

import math

import pytest
import torch

from act_core import ApplySettings, StrengthError, fit
from act_core.estimators import diff_means
from act_core.schedule import cfg_strengths
from act_core.strength import EXTRAPOLATION_BOUND, MAX_STRENGTH


@pytest.fixture(scope="module")
def maps():
    gen = torch.Generator().manual_seed(0)
    source, target = torch.randn(40, 3, generator=gen), torch.randn(40, 3, generator=gen) + 1
    return {"ot": {"a": fit(source, target)}, "steer": {"a": diff_means(source, target)}}


def test_the_two_bounds_are_the_documented_numbers():
    assert (EXTRAPOLATION_BOUND, MAX_STRENGTH) == (2.0, 10.0)


@pytest.mark.parametrize("kind,top", [("ot", 2.0), ("steer", 10.0)])
def test_strength_range_depends_on_the_maps(maps, kind, top):
    assert ApplySettings.checked(maps[kind], top).strength == top
    assert ApplySettings.checked(maps[kind], 0).strength == 0.0
    for bad in (top + 0.01, -0.1, math.nan):
        with pytest.raises(StrengthError, match=rf"outside the documented range \[0, {top:g}\]"):
            ApplySettings.checked(maps[kind], bad)


def test_a_set_mixing_steering_vectors_gets_their_wider_range(maps):
    mixed = {"a": maps["ot"]["a"], "b": maps["steer"]["a"]}
    assert ApplySettings.checked(mixed, 5.0).strength == 5.0


@pytest.mark.parametrize("kwargs,needle", [
    ({"start_percent": 0.6, "end_percent": 0.4}, "start_percent <= end_percent"),
    ({"end_percent": 1.5}, "start_percent <= end_percent"),
    ({"apply_to": "cond"}, "apply_to must be one of"),
])
def test_bad_ranges_and_halves_are_refused(maps, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ApplySettings.checked(maps["ot"], 1.0, **kwargs)


def test_a_label_starts_every_message(maps):
    with pytest.raises(StrengthError, match=r"^slider 'x': strength 3"):
        ApplySettings.checked(maps["ot"], 3.0, label="slider 'x'")
    with pytest.raises(ValueError, match=r"^slider 'x': apply_to"):
        ApplySettings.checked(maps["ot"], 1.0, apply_to="?", label="slider 'x'")


def test_settings_are_frozen_and_know_the_whole_schedule(maps):
    settings = ApplySettings.checked(maps["ot"], 0.5)
    assert settings.whole_schedule and settings.apply_to == "both"
    assert not ApplySettings.checked(maps["ot"], 0.5, 0.0, 0.9).whole_schedule
    with pytest.raises(AttributeError):
        settings.strength = 1.0  # type: ignore[misc]


def test_cfg_halves_get_the_strength_per_item():
    # a CFG batch of 2 chunks of 3: conditional first, then unconditional
    cond = cfg_strengths(0.5, "conditional", [0, 1], 6)
    uncond = cfg_strengths(0.5, "unconditional", [0, 1], 6)
    assert torch.equal(cond, torch.tensor([0.5] * 3 + [0.0] * 3))
    assert torch.equal(uncond, torch.tensor([0.0] * 3 + [0.5] * 3))
    assert torch.equal(cfg_strengths(0.5, "conditional", [1, 0], 4),
                       torch.tensor([0.0, 0.0, 0.5, 0.5]))
    # one value for the whole batch is returned as a number
    assert cfg_strengths(0.5, "both", [0, 1], 6) == 0.5
    assert cfg_strengths(0.5, "conditional", [0], 3) == 0.5
    assert cfg_strengths(0.5, "conditional", [1], 3) == 0.0
    assert cfg_strengths(0.5, "conditional", None, 3) == 0.5


def test_per_item_uses_the_settings_or_a_scaled_strength(maps):
    settings = ApplySettings.checked(maps["ot"], 0.8, apply_to="conditional")
    assert torch.equal(settings.per_item([0, 1], 2), torch.tensor([0.8, 0.0]))
    assert torch.equal(settings.per_item([0, 1], 2, 0.25), torch.tensor([0.25, 0.0]))


@pytest.mark.comfyui
def test_every_strength_input_of_the_nodes_stops_at_the_core_bound(act_pack):
    from act_pack.act_core.strength import MAX_STRENGTH as PACK_MAX
    from act_pack.nodes import NODES

    tops = {}
    for node in NODES:
        schema = node.GET_SCHEMA()
        for i in schema.inputs:
            info = i.as_dict()
            if i.id.startswith("strength") and "max" in info:
                tops[(schema.node_id, i.id)] = info["max"]
    nodes = {node for node, _ in tops}
    assert {"ActApplyTransport", "ActApplyTransportCLIP"} <= nodes, tops
    assert set(tops.values()) == {PACK_MAX}, tops
