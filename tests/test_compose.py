"""Several map sets at once: sequential at each site, one patch per module, bit-identical to
nesting the single-set contexts; conflicts between sets that push units in opposite ways."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from torch import nn

from act_core import StrengthError, apply_transport, fit, record_activations
from act_core.compose import ComposedPlan, apply_composed, find_conflicts, unit_shifts
from act_core.patch import interventions


class _Pair(nn.Module):
    """Returns two feature maps: two sites (``pair:0``, ``pair:1``) on one module."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.tanh(x)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.pair = _Pair()
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pair(self.norm(self.conv(x)))
        return self.head(torch.cat([a, b], dim=1))


SITES = ("conv", "norm", "pair:0", "pair:1")


def _inputs(seed: int, shift: float = 0.0, n: int = 24) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) + shift


def _maps(model: nn.Module, sites, source, target) -> dict:
    with torch.no_grad(), record_activations(model, list(sites)) as rec:
        model(source)
    a = rec.stacked()
    with torch.no_grad(), record_activations(model, list(sites)) as rec:
        model(target)
    b = rec.stacked()
    return {s: fit(a[s], b[s], mode="channels") for s in sites}


@pytest.fixture(scope="module")
def setup():
    model = _Tiny().eval()
    base = _inputs(1)
    # A: every site, shifted inputs; B: three sites, scaled inputs (shares norm and pair:*)
    a = _maps(model, SITES, base, _inputs(2, shift=0.8))
    b = _maps(model, SITES[1:], base, _inputs(3) * 1.7)
    return model, a, b, _inputs(9, n=4)


def _nested(model, sets, strengths, supports, x):
    def run(i):
        if i == len(sets):
            return model(x)
        with apply_transport(model, sets[i], strengths[i], supports[i]):
            return run(i + 1)
    with torch.no_grad():
        return run(0)


@pytest.mark.parametrize("strengths", [(1.0, 1.0), (0.4, 1.3), (1.0, 0.0), (0.0, 0.7)])
def test_composed_equals_nested_bit_for_bit(setup, strengths):
    model, a, b, x = setup
    supports = ("unbounded", "minmax")
    for sets in ((a, b), (b, a)):
        with torch.no_grad(), apply_composed(model, sets, strengths, supports):
            composed = model(x)
        assert torch.equal(composed, _nested(model, sets, strengths, supports, x))
    assert not interventions(model)


def test_order_is_the_meaning_t_b_after_t_a(setup):
    model, a, b, x = setup
    with torch.no_grad(), apply_composed(model, [a, b], [1.0, 1.0], "unbounded"):
        ab = model(x)
    with torch.no_grad(), apply_composed(model, [b, a], [1.0, 1.0], "unbounded"):
        ba = model(x)
    assert not torch.equal(ab, ba)  # scale maps do not commute with shifts
    # at one site, by hand: T_B(T_A(x)) of the conv output, read from the norm's input
    seen = {}
    handle = model.norm.register_forward_pre_hook(lambda m, args: seen.setdefault("in", args[0]))
    try:
        with torch.no_grad(), apply_composed(model, [a, b], [1.0, 1.0], "unbounded"):
            model(x)
    finally:
        handle.remove()
    with torch.no_grad():
        conv = model.conv(x)
    mu = conv.mean(dim=(2, 3))
    t = a["conv"]
    expected = conv + ((t.scale - 1) * mu + t.shift)[:, :, None, None]  # B has no conv map
    torch.testing.assert_close(seen["in"], expected, rtol=1e-5, atol=1e-5)


def test_per_item_and_callable_strengths_match_nesting(setup):
    model, a, b, x = setup
    per_item = torch.tensor([0.0, 1.0, 0.5, 1.0])
    calls = []

    def scheduled():
        calls.append(1)
        return 0.6

    strengths = (per_item, scheduled)
    with torch.no_grad(), apply_composed(model, [a, b], strengths, "unbounded"):
        composed = model(x)
    assert calls  # evaluated at the calls
    assert torch.equal(composed, _nested(model, (a, b), strengths, ("unbounded",) * 2, x))


def test_zero_or_none_everywhere_is_the_plain_model(setup):
    model, a, b, x = setup
    with torch.no_grad():
        plain = model(x)
        with apply_composed(model, [a, b], [0.0, None]):
            assert not interventions(model)  # nothing installed at all
            assert torch.equal(model(x), plain)


def test_one_patch_per_module_and_nothing_left(setup):
    model, a, b, x = setup
    with apply_composed(model, [a, b], [1.0, 1.0], "unbounded"):
        assert interventions(model) == {"conv": 1, "norm": 1, "pair": 1}
    with apply_transport(model, a, 1.0, "unbounded"), apply_transport(model, b, 1.0,
                                                                       "unbounded"):
        assert interventions(model) == {"conv": 1, "norm": 2, "pair": 4}
    assert not interventions(model)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), \
            apply_composed(model, [a, b], [1.0, 1.0], "unbounded"):
        model(x)
        raise RuntimeError("boom")
    assert not interventions(model)


def test_fixed_strengths_reuse_the_same_patches(setup):
    model, a, b, _ = setup
    from act_core.apply import TransportPlan

    plan = ComposedPlan([TransportPlan(model, a, "unbounded"), TransportPlan(model, b)])
    first = plan._patches_for([1.0, 0.5])
    assert plan._patches_for([1.0, 0.5]) is first
    assert plan._patches_for([1.0, 0.25]) is not first


def test_invalid_input_is_refused(setup):
    model, a, b, _ = setup
    with pytest.raises(StrengthError), apply_composed(model, [a, b], [1.0, -1.0]):
        pass
    with pytest.raises(ValueError, match="expected 2 strengths"), \
            apply_composed(model, [a, b], [1.0]):
        pass
    assert not interventions(model)


def test_conflict_found_for_opposite_maps_and_not_for_unrelated(setup, caplog):
    model, a, b, _ = setup
    back = {site: tmap.inverse() for site, tmap in a.items()}
    for tmap in a.values():  # the inverse map's shift is the opposite of the map's
        torch.testing.assert_close(unit_shifts(tmap.inverse()), -unit_shifts(tmap))
    with caplog.at_level(logging.WARNING, logger="act_core.compose"):
        conflicts = find_conflicts([a, back], labels=["warm", "cold"])
    assert {c.site for c in conflicts} == set(SITES)
    assert all(c.opposed == 1.0 and c.first == "warm" for c in conflicts)
    assert all(c.cosine == pytest.approx(-1.0) and c.size == pytest.approx(1.0)
               for c in conflicts)
    assert "'warm' and 'cold' fight at 4 of their 4 shared sites" in caplog.text
    assert find_conflicts([a, a]) == []  # same direction: no fight
    # disjoint units: A moves the first half of the channels, the other map the second half
    half = {s: _masked(t, first=True) for s, t in a.items()}
    other = {s: _masked(back[s], first=False) for s in a}
    assert find_conflicts([half, other]) == []
    # unrelated maps: random shifts, about half the units opposite by chance, not a fight
    gen = torch.Generator().manual_seed(5)
    noise = [{s: dataclasses.replace(t, scale=torch.ones(t.dim), shift=torch.randn(
        t.dim, generator=gen)) for s, t in a.items()} for _ in range(2)]
    assert find_conflicts(noise) == []
    # a small opposite map is not a fight either (it only weakens the big one a little)
    small = {s: dataclasses.replace(t, scale=1 + (t.scale - 1) * 0.1, shift=t.shift * 0.1)
             for s, t in back.items()}
    assert find_conflicts([a, small]) == []


def _masked(tmap, first: bool):
    keep = torch.arange(tmap.dim) < tmap.dim // 2
    keep = keep if first else ~keep
    return dataclasses.replace(tmap, scale=torch.where(keep, tmap.scale, 1.0),
                               shift=torch.where(keep, tmap.shift, 0.0))
