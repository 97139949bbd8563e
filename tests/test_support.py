"""Support parsing and the per-unit bounds it selects."""

from __future__ import annotations

import pytest
import torch

from act_core import Support, SupportError, fit, parse_support
from act_core.maps import QUANTILE_LEVELS
from act_core.support import (
    FROM_MAPS,
    SUPPORT_CHOICES,
    check_support_choice,
    resolve_support,
    support_bounds,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("minmax", Support("minmax")),
        (" MinMax ", Support("minmax")),
        ("unbounded", Support("unbounded")),
        ("q0.05-0.95", Support("quantile", 0.05, 0.95)),
        ("q.1-.9", Support("quantile", 0.1, 0.9)),
        ((0.01, 0.99), Support("quantile", 0.01, 0.99)),
        (Support("unbounded"), Support("unbounded")),
    ],
)
def test_parse_support(spec, expected):
    assert parse_support(spec) == expected
    assert parse_support(str(expected)) == expected


@pytest.mark.parametrize(
    "spec", ["", "q0.9-0.1", "q0.5", "everywhere", (0.2,), 3, (1.0, float("nan"))])
def test_bad_supports_are_refused(spec):
    with pytest.raises(SupportError):
        parse_support(spec)


def test_bounds_select_min_max_quantiles_or_nothing():
    torch.manual_seed(0)
    tmap = fit(torch.randn(200, 3), torch.randn(200, 3))
    lo, hi = support_bounds(tmap, "minmax")
    assert torch.equal(lo, tmap.lo) and torch.equal(hi, tmap.hi)
    assert support_bounds(tmap, "unbounded") is None
    lo, hi = support_bounds(tmap, "q0.05-0.95")
    assert torch.equal(lo, tmap.quantiles[QUANTILE_LEVELS.index(0.05)])
    assert bool((lo > tmap.lo).all() and (hi < tmap.hi).all())
    lo, hi = support_bounds(tmap, "q0-1")
    assert torch.equal(lo, tmap.lo) and torch.equal(hi, tmap.hi)


def test_unstored_level_names_the_stored_ones():
    tmap = fit(torch.randn(20, 2), torch.randn(20, 2))
    with pytest.raises(SupportError, match="0.03 is not stored.*0.02, 0.05"):
        support_bounds(tmap, "q0.03-0.97")


def test_the_library_choices_work_on_a_fitted_map():
    tmap = fit(torch.randn(20, 2) * 3, torch.randn(20, 2))
    bounds = {choice: support_bounds(tmap, choice) for choice in SUPPORT_CHOICES}
    assert torch.equal(bounds["minmax"][0], tmap.lo) and torch.equal(bounds["minmax"][1], tmap.hi)
    assert bool((bounds["q0.1-0.9"][0] > tmap.lo).all() and (bounds["q0.1-0.9"][1] < tmap.hi).all())


@pytest.mark.comfyui
def test_every_support_a_node_offers_works_on_a_fitted_map(act_pack):
    from act_pack.act_core.estimators import fit as pack_fit
    from act_pack.act_core.support import support_bounds as pack_bounds
    from act_pack.nodes import NODES

    tmap = pack_fit(torch.randn(20, 2), torch.randn(20, 2))
    offered = {(node.GET_SCHEMA().node_id, option) for node in NODES
               for i in node.GET_SCHEMA().inputs if i.id == "support"
               for option in i.as_dict()["options"] if option != "from maps"}
    assert {node for node, _ in offered} >= {"ActLearnTransport", "ActApplyTransport"}
    for node, option in offered:
        bounds = pack_bounds(tmap, option)  # raises SupportError for an unparseable option
        assert (bounds is None) == (option == "unbounded"), (node, option)
        assert bounds is None or bounds[0].shape == bounds[1].shape == (2,), (node, option)


def test_from_maps_resolves_to_what_the_files_record_and_refuses_a_disagreement():
    # what the nodes and the act command apply when the user leaves the support alone
    assert resolve_support(FROM_MAPS, ["q0.05-0.95"]) == "q0.05-0.95"
    assert resolve_support(" From  Maps ", ["q0.05-0.95", "q.05-.95"]) == "q0.05-0.95"
    assert resolve_support(FROM_MAPS, []) == "minmax"  # nothing recorded: the old behaviour
    assert resolve_support("unbounded", ["q0.05-0.95"]) == "unbounded"  # the user's choice wins
    with pytest.raises(SupportError, match="different supports"):
        resolve_support(FROM_MAPS, ["minmax", "unbounded"])
    check_support_choice("From maps")
    check_support_choice("q0.1-0.9")
    with pytest.raises(SupportError, match="cannot parse"):
        check_support_choice("form maps")
