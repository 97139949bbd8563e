"""act_core.selection: the held-out split, the output gap and the choice among site groups."""

from __future__ import annotations

import math

import pytest
import torch

from act_core.selection import NO_GAIN_WARNING, Selection, heldout_split, output_gap, select


@pytest.mark.parametrize(("n", "held"), [(0, 0), (1, 0), (2, 1), (3, 1), (6, 2), (18, 4)])
def test_split_holds_out_the_last_third_at_most_four(n, held):
    fit, out = heldout_split(n)
    assert len(out) == held
    assert sorted(fit + out) == list(range(n))
    assert out == list(range(n - held, n))


def test_paired_gap_is_the_mean_squared_difference():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [2.0, 5.0]])
    assert output_gap(a, b, paired=True) == pytest.approx((1 + 0 + 0 + 4) / 4)


def test_unpaired_gap_ignores_the_order_and_compares_distributions():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, 2, 2, generator=gen)
    shuffled = a[torch.randperm(64, generator=gen)]
    assert output_gap(a, shuffled, paired=False) == pytest.approx(0.0, abs=1e-12)
    assert output_gap(a, shuffled, paired=True) > 0.5
    # a shift by 2 everywhere: the squared 1-D Wasserstein distance is exactly 4
    assert output_gap(a, a[:40] + 2.0, paired=False) > 3.0
    assert output_gap(a, a + 2.0, paired=False) == pytest.approx(4.0)


def test_gap_refuses_outputs_of_other_shapes():
    with pytest.raises(ValueError, match="trailing dimensions"):
        output_gap(torch.zeros(2, 3), torch.zeros(2, 4), paired=False)
    with pytest.raises(ValueError, match="as many rows"):
        output_gap(torch.zeros(2, 3), torch.zeros(3, 3), paired=True)


def test_select_takes_the_smallest_gap_and_scales_by_the_unsteered_gap():
    chosen = select({"norms": 0.6, "cross": 0.1, "broken": math.nan}, 2.0, (2, 2), True)
    assert chosen.chosen == "cross"
    assert chosen.scores == {"norms": 0.3, "cross": 0.05, "broken": math.inf}
    assert not chosen.warnings
    assert "chose 'cross'" in chosen.text()
    assert Selection.from_dict(chosen.as_dict()) == chosen


def test_select_warns_when_no_candidate_helps():
    chosen = select({"a": 1.9, "b": 2.1}, 2.0, (1, 1), False)
    assert chosen.scores["a"] > NO_GAIN_WARNING
    assert chosen.warnings and "no site group" in chosen.warnings[0]
    assert "WARNING" in chosen.text()
    with pytest.raises(ValueError, match="no candidate"):
        select({}, 1.0, (1, 1), True)


def test_nothing_to_close_warns_and_prefers_the_least_change():
    chosen = select({"a": 0.5, "b": 0.0}, 0.0, (2, 2), True)
    assert chosen.chosen == "b" and chosen.scores == {"a": 1.5, "b": 1.0}
    assert chosen.warnings
