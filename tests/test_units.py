"""Keeping a map only on units whose source-target difference stands out of the noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from act_core import fit_many
from act_core.errors import FitError
from act_core.fitting import fit_sites
from act_core.transport import transport
from act_core.units import keep_units, shift_z


def _samples(seed: int = 0, n: int = 200, d: int = 6, shifted=(0, 3)):
    """Source and target of one distribution, except a shift of 2 on the ``shifted`` units."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(n, d, generator=g)
    target = torch.randn(n + 20, d, generator=g) * 1.5
    target[:, list(shifted)] += 2.0
    return source, target


def test_shift_z_is_the_welch_statistic():
    source, target = _samples()
    a, b = source.numpy().astype(np.float64), target.numpy().astype(np.float64)
    expected = np.abs(b.mean(0) - a.mean(0)) / np.sqrt(
        a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    np.testing.assert_allclose(shift_z(source, target).numpy(), expected, rtol=1e-12)
    # a constant unit: equal constants give 0, different constants an infinite statistic
    flat = torch.zeros(4, 2)
    other = flat.clone()
    other[:, 1] = 1.0
    assert shift_z(flat, other).tolist() == [0.0, float("inf")]


def test_only_the_shifted_units_keep_their_map_and_the_rest_are_left_exactly_alone():
    source, target = _samples()
    maps = fit_many({"site": (source, target)})
    kept_maps, kept = keep_units(maps, {"site": source}, {"site": target}, 4.0)
    assert kept == {"site": 2}
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    full = transport(x, maps["site"], 1.0, "unbounded")
    pruned = transport(x, kept_maps["site"], 1.0, "unbounded")
    for unit in range(6):
        if unit in (0, 3):  # a real shift: the fitted map, unchanged
            torch.testing.assert_close(pruned[:, unit], full[:, unit])
            assert (pruned[:, unit] - x[:, unit]).abs().min() > 1.0
        else:  # noise only: the identity, bit for bit
            assert torch.equal(pruned[:, unit], x[:, unit])
    # the statistics and the rest of the map are kept, so it is still an ordinary map
    assert torch.equal(kept_maps["site"].lo, maps["site"].lo)
    assert kept_maps["site"].method == maps["site"].method


def test_threshold_zero_keeps_everything_and_bad_inputs_are_clear_errors():
    source, target = _samples()
    maps = fit_many({"site": (source, target)})
    same, kept = keep_units(maps, {"site": source}, {"site": target}, 0.0)
    assert same["site"] is maps["site"] and kept == {"site": 6}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(FitError, match="min_z"):
            keep_units(maps, {"site": source}, {"site": target}, bad)
    with pytest.raises(FitError, match="no samples for sites"):
        keep_units(maps, {}, {}, 2.0)
    with pytest.raises(FitError, match=r"\(N, D\)"):
        shift_z(source, target[:, :3])


class _TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


@pytest.mark.parametrize("incremental", [False, True])
def test_fit_sites_keeps_only_units_whose_difference_is_real(incremental):
    torch.manual_seed(0)
    model = _TwoLayers().eval()
    g = torch.Generator().manual_seed(2)
    source_x = torch.randn(300, 4, generator=g)
    target_x = torch.randn(300, 4, generator=g)
    target_x[:, 0] += 3.0  # the inputs differ along one direction only

    def run(inputs):
        def go(recorder):
            with torch.no_grad():
                for chunk in inputs.split(100):
                    model(chunk)
        return go

    samples: dict = {}
    every = fit_sites(model, ["first", "second"], run(source_x), run(target_x),
                      incremental=incremental, samples=samples)
    pruned = fit_sites(model, ["first", "second"], run(source_x), run(target_x),
                       incremental=incremental, unit_z=1e6)
    for site in ("first", "second"):  # no difference is that large: every unit is the identity
        assert torch.equal(pruned[site].scale, torch.ones(4))
        assert torch.equal(pruned[site].shift, torch.zeros(4))
    z = shift_z(samples["source"]["first"], samples["target"]["first"])
    some = fit_sites(model, ["first", "second"], run(source_x), run(target_x),
                     incremental=incremental, unit_z=float(z.median()))
    changed = (some["first"].scale != 1) | (some["first"].shift != 0)
    assert torch.equal(changed, z > z.median())
    assert torch.equal(some["first"].scale[changed], every["first"].scale[changed])


def test_fit_sites_refuses_a_bad_threshold_before_recording_anything():
    def never(recorder):
        raise AssertionError("no forward pass should run")

    with pytest.raises(FitError, match="min_z"):
        fit_sites(_TwoLayers(), ["first"], never, never, unit_z=-1.0)


def test_the_paired_statistic_finds_a_shift_that_the_spread_between_pairs_hides():
    # 40 texts spread widely (sd 3 per unit), each rewritten: the rewrite moves unit 1 by 0.5
    # and the others by nothing, plus a little noise of its own (sd 0.2)
    g = torch.Generator().manual_seed(3)
    source = 3.0 * torch.randn(40, 4, generator=g)
    target = source + 0.2 * torch.randn(40, 4, generator=g)
    target[:, 1] += 0.5
    d = target.double().numpy() - source.double().numpy()
    expected = np.abs(d.mean(0)) / (d.std(0, ddof=1) / np.sqrt(len(d)))
    paired = shift_z(source, target, paired=True)
    np.testing.assert_allclose(paired.numpy(), expected, rtol=1e-12)
    welch = shift_z(source, target)
    assert welch[1] < 1.0 < 10.0 < paired[1]  # two samples see noise, the pairs see the shift
    maps = fit_many({"site": (source, target)})
    kept_maps, kept = keep_units(maps, {"site": source}, {"site": target}, 5.0, paired=True)
    assert kept == {"site": 1}
    moved = (kept_maps["site"].scale != 1) | (kept_maps["site"].shift != 0)
    assert moved.tolist() == [False, True, False, False]
    assert keep_units(maps, {"site": source}, {"site": target}, 5.0)[1] == {"site": 0}
    with pytest.raises(FitError, match="one target row per source row"):
        shift_z(source, target[:30], paired=True)


def test_fit_sites_refuses_an_unknown_statistic_before_recording_anything():
    def never(recorder):
        raise AssertionError("no forward pass should run")

    with pytest.raises(FitError, match=r"unit_stat must be one of \['welch', 'paired'\]"):
        fit_sites(_TwoLayers(), ["first"], never, never, unit_z=2.0, unit_stat="pairs")
