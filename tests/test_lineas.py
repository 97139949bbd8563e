"""LinEAS (act_core.lineas) and the diagnostics (act_core.diagnose) on tiny in-process models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_core import FitError, apply_transport, load_maps, record_activations, save_maps
from act_core.diagnose import closed_share, diagnose
from act_core.estimators import linear_act
from act_core.lineas import LineasConfig, fit_lineas
from act_core.patch import interventions

pytestmark = pytest.mark.usefixtures("one_thread")


class Tokens(nn.Module):
    """(B, T, 4) -> two linear sites and a norm site, (B, T, 8) each."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.b(torch.relu(self.a(x))))


class Images(nn.Module):
    """(B, 3, 6, 6) -> a conv site and a GroupNorm site (channels mode)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gn = nn.GroupNorm(2, 6, affine=True)
        self.head = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.gn(self.conv(x))))


def _data(shape: tuple[int, ...], n: int, m: int, shift: float = 1.5, scale: float = 2.0):
    gen = torch.Generator().manual_seed(1)
    source = torch.randn(n, *shape, generator=gen)
    target = torch.randn(m, *shape, generator=gen) * scale + shift
    return source, target


def _runners(model: nn.Module, source: torch.Tensor, target: torch.Tensor):
    def run_source(indices, recorder) -> None:
        model(source[list(indices)])

    def run_target(recorder) -> None:
        for start in range(0, len(target), 8):
            model(target[start:start + 8])

    return run_source, run_target


def _fit(model, sites, source, target, **config):
    run_source, run_target = _runners(model, source, target)
    options = {"steps": 60, "batch_size": 8, "lr": 0.1, **config}
    return fit_lineas(model, sites, run_source, len(source), run_target,
                      config=LineasConfig(**options))


def test_lineas_carries_the_source_onto_the_target_at_every_site():
    model = Tokens()
    source, target = _data((5, 4), 40, 24)  # N != M: paired by quantiles
    fitted = _fit(model, ["a", "b", "norm"], source, target)
    assert list(fitted.maps) == ["a", "b", "norm"]
    assert fitted.losses[-1] < 0.2 * fitted.losses[0]
    report = diagnose(fitted.source, fitted.target, fitted.maps, fitted.transported)
    for site in report.sites:
        assert site.signal > 5 and site.remaining < 0.25 * site.separation, site
    assert not report.warnings
    # the summed share the report gives is the one closed_share measures from the samples
    closed = closed_share(fitted.source, fitted.target, fitted.transported)
    assert report.closed == pytest.approx(closed, rel=1e-6) and report.closed > 0.75
    for tmap in fitted.maps.values():
        assert tmap.method == "lineas" and tmap.mode == "tokens"
        assert (tmap.n_source, tmap.n_target) == (40, 24)


def test_applying_the_maps_reproduces_what_lineas_measured(tmp_path):
    """The saved, reloaded maps applied by act_core's hooks at strength 1 (unbounded) give
    exactly the transported activations the fit recorded: same maps, same file format."""
    model = Tokens()
    source, target = _data((5, 4), 16, 16)
    fitted = _fit(model, ["a", "b", "norm"], source, target, steps=10)
    save_maps(tmp_path / "m.safetensors", fitted.maps)
    maps = load_maps(tmp_path / "m.safetensors")
    with torch.no_grad(), apply_transport(model, maps, 1.0, "unbounded"), \
            record_activations(model, ["a", "b", "norm"]) as recorder:
        model(source)
    for site, values in recorder.stacked().items():
        torch.testing.assert_close(values, fitted.transported[site], rtol=1e-4, atol=1e-5)


def test_channel_sites_shift_whole_channels_and_converge():
    model = Images()
    source, target = _data((3, 6, 6), 24, 24, shift=0.8, scale=1.5)
    fitted = _fit(model, ["conv", "gn"], source, target)
    assert {m.mode for m in fitted.maps.values()} == {"channels"}
    report = diagnose(fitted.source, fitted.target, fitted.maps, fitted.transported)
    for site in report.sites:
        assert site.remaining < 0.3 * site.separation, site


def test_the_same_seed_gives_the_same_maps_and_another_seed_other_maps():
    model = Tokens()
    source, target = _data((5, 4), 24, 24)
    first = _fit(model, ["a", "norm"], source, target, steps=8, batch_size=4, seed=3)
    again = _fit(model, ["a", "norm"], source, target, steps=8, batch_size=4, seed=3)
    other = _fit(model, ["a", "norm"], source, target, steps=8, batch_size=4, seed=4)
    for site in first.maps:
        assert torch.equal(first.maps[site].scale, again.maps[site].scale)
        assert torch.equal(first.maps[site].shift, again.maps[site].shift)
    assert not torch.equal(first.maps["a"].shift, other.maps["a"].shift)


def test_the_fit_says_how_often_it_drew_each_source_input(caplog):
    """Too few passes over the source stop the maps short (docs/results.md, the converged
    full-data round), so the log line says how many there were: 6 steps of 4 over 12 inputs."""
    model = Tokens()
    source, target = _data((5, 4), 12, 12)
    with caplog.at_level("INFO", logger="act_core.lineas"):
        _fit(model, ["a"], source, target, steps=6, batch_size=4)
    assert "6 steps (2.0 passes over the 12 source inputs)" in caplog.text


def test_shifts_only_keep_every_scale_at_one_and_still_carry_a_shift():
    model = Tokens()
    source, target = _data((5, 4), 24, 24, shift=1.5, scale=1.0)
    fitted = _fit(model, ["a", "norm"], source, target, scale=False)
    warm = _fit(model, ["a", "norm"], source, target, scale=False, init="linear_act", steps=1)
    report = diagnose(fitted.source, fitted.target, fitted.maps, fitted.transported)
    for site in ("a", "norm"):
        for maps in (fitted.maps, warm.maps):
            assert torch.equal(maps[site].scale, torch.ones_like(maps[site].scale))
        assert fitted.maps[site].shift.abs().max() > 0.1
    assert report.closed > 0.5, report.closed


def test_group_sparsity_switches_off_sites_and_a_strong_one_all_of_them():
    model = Tokens()
    source, target = _data((5, 4), 32, 32)
    dense = _fit(model, ["a", "b", "norm"], source, target)
    assert sum(dense.kept().values()) == 3 * 8
    # the group threshold is a fraction of the largest step Adam can take (lr sqrt(2 D)): a
    # site survives while its steps agree from step to step; where that stops differs per site
    sites_kept = []
    for group in (0.5, 0.9, 0.93, 0.94, 0.95, 1.2):
        kept = _fit(model, ["a", "b", "norm"], source, target, group=group, steps=100).kept()
        sites_kept.append(sum(1 for n in kept.values() if n))
    assert sites_kept[0] == 3 and sites_kept[-1] == 0, sites_kept
    assert sites_kept == sorted(sites_kept, reverse=True), sites_kept
    assert any(0 < n < 3 for n in sites_kept), sites_kept  # some sites off, not all
    off = _fit(model, ["a", "b", "norm"], source, target, group=5.0)
    assert sum(off.kept().values()) == 0
    report = diagnose(off.source, off.target, off.maps, off.transported)
    assert any("move almost nothing" in w for w in report.warnings)
    assert not any("barely differ" in w for w in report.warnings)


def test_l1_sparsity_switches_off_units():
    model = Tokens()
    source, target = _data((5, 4), 32, 32)
    fitted = _fit(model, ["a", "b"], source, target, l1=0.9)
    assert 0 < sum(fitted.kept().values()) < 2 * 8


def test_the_model_is_left_as_it_was_and_hooks_removed_also_on_error():
    model = Tokens()
    model.a.weight.requires_grad_(False)
    source, target = _data((5, 4), 8, 8)
    _fit(model, ["a", "norm"], source, target, steps=2)
    assert not model.a.weight.requires_grad and model.b.weight.requires_grad
    assert not interventions(model)
    calls = []

    def failing(indices, recorder) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("stop")
        model(source[list(indices)])

    with pytest.raises(RuntimeError, match="stop"):
        fit_lineas(model, ["a"], failing, 8, _runners(model, source, target)[1])
    assert not interventions(model)
    assert model.b.weight.requires_grad


def test_bad_inputs_say_what_to_do():
    model = Tokens()
    source, target = _data((5, 4), 8, 8)
    run_source, run_target = _runners(model, source, target)
    with pytest.raises(FitError, match="at least 2 source"):
        fit_lineas(model, ["a"], run_source, 1, run_target)
    with pytest.raises(FitError, match="no sites"):
        fit_lineas(model, [], run_source, 8, run_target)
    with pytest.raises(FitError, match="never ran during the target pass"):
        fit_lineas(model, ["a"], run_source, 8, lambda recorder: None)
    with pytest.raises(ValueError, match="lr"):
        LineasConfig(lr=0.0)
    with pytest.raises(ValueError, match="init must be one of"):
        LineasConfig(init="closed_form")


def test_a_linear_act_warm_start_begins_at_each_sites_own_map_then_lowers_the_joint_loss():
    model = Tokens()
    source, target = _data((5, 4), 40, 24)
    with torch.no_grad(), record_activations(model, ["a", "b"]) as rec_source:
        model(source)
    with torch.no_grad(), record_activations(model, ["a", "b"]) as rec_target:
        model(target)
    cold = _fit(model, ["a", "b", "norm"], source, target, steps=1, lr=1e-7)
    warm = _fit(model, ["a", "b", "norm"], source, target, steps=1, lr=1e-7, init="linear_act")
    assert cold.maps["a"].scale.sub(1).abs().max() < 1e-5  # the identity start
    for key in ("a", "b"):  # each site's own map, fitted on the unmodified model's samples
        own = linear_act(rec_source.stacked()[key], rec_target.stacked()[key])
        torch.testing.assert_close(warm.maps[key].scale, own.scale, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(warm.maps[key].shift, own.shift, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(warm.source["b"], cold.source["b"])  # the unmodified source
    # fitted apart, the maps overshoot together (b's input is already moved by a's map);
    # the end-to-end steps correct that
    trained = _fit(model, ["a", "b", "norm"], source, target, init="linear_act")
    assert trained.losses[0] == pytest.approx(warm.losses[0], rel=1e-4)
    assert trained.losses[-1] < 0.2 * trained.losses[0]


def test_diagnose_warns_when_source_and_target_are_the_same_distribution():
    model = Tokens()
    gen = torch.Generator().manual_seed(5)
    source, target = torch.randn(64, 5, 4, generator=gen), torch.randn(64, 5, 4, generator=gen)
    fitted = _fit(model, ["a", "b"], source, target, steps=5)
    report = diagnose(fitted.source, fitted.target, fitted.maps, fitted.transported)
    assert all(s.signal < 3 for s in report.sites)
    assert any("barely differ" in w for w in report.warnings)
    assert "WARNING" in report.text()


def test_the_report_tells_apart_sites_whose_long_names_end_alike():
    """UNet sites input_blocks.1.1.X and output_blocks.1.1.X end alike for 48 characters: the
    report keeps each name's start and end, so the two rows read differently."""
    from act_core.diagnose import Diagnosis, SiteDiagnosis, short_site

    tail = ".1.1.transformer_blocks.0.attn2.to_out.0"
    names = ["input_blocks" + tail, "output_blocks" + tail, "out"]
    rows = [SiteDiagnosis(site=n, separation=1.0, noise=1.0, remaining=0.1, moved=0.5,
                          kept=8, units=8) for n in names]
    lines = Diagnosis(tuple(rows), ()).text().splitlines()[2:]
    labels = [line[:48].rstrip() for line in lines]
    assert len(set(labels)) == 3 and labels[2] == "out"
    assert labels[0].startswith("input_blocks") and labels[1].startswith("output_blocks")
    assert all(label.endswith("attn2.to_out.0") and len(label) == 48 for label in labels[:2])
    assert short_site("abc", 48) == "abc"


def test_batch_ranks_count_the_smaller_rows_of_each_unit_as_a_double_sort_does():
    from act_core.lineas import _ranks

    gen = torch.Generator().manual_seed(0)
    pool = torch.randn(50, 7, generator=gen, dtype=torch.float64)
    slots = [3, 17, 4, 49, 0]
    expected = pool.argsort(dim=0).argsort(dim=0)[slots]  # distinct values: one order
    assert torch.equal(_ranks(pool, slots), expected)
    pool[10] = pool[3]  # a tie: the earlier row first, as a stable sort puts them
    pool[:, 6] = 1.5  # a unit whose rows are all equal: their ranks are their order
    stable = pool.argsort(dim=0, stable=True).argsort(dim=0)
    assert torch.equal(_ranks(pool, [3, 10, 20]), stable[[3, 10, 20]])
    assert _ranks(pool, [10])[0, 0] == _ranks(pool, [3])[0, 0] + 1
    assert _ranks(pool, [20])[0, 6] == 20
