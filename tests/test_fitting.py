"""fit_sites: all-at-once and incremental fitting over a model's sites."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_core import FitError, apply_transport, fit, fit_sites, record_activations
from act_core.fitting import split_stages
from act_core.patch import interventions

SITES = ["0", "2", "4"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 16)).eval()


def _data(seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(96, 8, generator=g) * (1 + shift) + shift


SOURCE, TARGET = _data(1, 0.0), _data(2, 0.8)


def _runs(model: nn.Module) -> tuple:
    return _runner(model, SOURCE), _runner(model, TARGET)


def _runner(model: nn.Module, x: torch.Tensor):
    def run(recorder) -> None:
        with torch.no_grad():
            for batch in x.split(40):  # the caller batches
                model(batch)
    return run


@pytest.fixture()
def model():
    return _model()


def _record(model: nn.Module, x: torch.Tensor, site: str) -> torch.Tensor:
    with torch.no_grad(), record_activations(model, [site]) as recorder:
        model(x)
    return recorder.stacked()[site]


def test_all_at_once_fits_every_site_from_one_pass_per_side(model):
    calls = []
    maps = fit_sites(model, SITES, *_runs(model), incremental=False,
                     progress=lambda done, total: calls.append((done, total)))
    assert list(maps) == SITES and calls == [(1, 2), (2, 2)]
    for site in SITES:
        expected = fit(_record(model, SOURCE, site), _record(model, TARGET, site), mode="vector")
        torch.testing.assert_close(maps[site].scale, expected.scale)
        assert maps[site].mode == "vector" and maps[site].n_source == 96


def test_incremental_later_sites_see_transported_inputs(model):
    calls = []
    joint = fit_sites(model, SITES, *_runs(model), incremental=False)
    chained = fit_sites(model, SITES, *_runs(model),
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    torch.testing.assert_close(chained["0"].scale, joint["0"].scale)  # nothing upstream
    for site in ("2", "4"):
        assert not torch.allclose(chained[site].scale, joint[site].scale)
    with torch.no_grad(), apply_transport(model, {"0": chained["0"]}, 1.0):
        upstream = _record(model, SOURCE, "2")
    expected = fit(upstream, _record(model, TARGET, "2"))
    torch.testing.assert_close(chained["2"].scale, expected.scale)
    # the incremental maps, applied together, put the last site exactly on the target mean
    goal = _record(model, TARGET, "4").mean(0)
    errors = {}
    for name, maps in (("chained", chained), ("joint", joint)):
        with torch.no_grad(), apply_transport(model, maps, 1.0):
            errors[name] = float((_record(model, SOURCE, "4").mean(0) - goal).abs().max())
    assert errors["chained"] < 1e-4 < errors["joint"]


def test_stages_group_consecutive_sites(model):
    assert split_stages(["a", "b", "c", "d", "e"], 2) == [["a", "b", "c"], ["d", "e"]]
    assert split_stages(["a", "b"], None) == [["a"], ["b"]]
    assert split_stages(["a", "b"], 5) == [["a"], ["b"]]
    with pytest.raises(FitError):
        split_stages(["a"], 0)
    joint = fit_sites(model, SITES, *_runs(model), incremental=False)
    one = fit_sites(model, SITES, *_runs(model), stages=1)
    for site in SITES:
        torch.testing.assert_close(one[site].scale, joint[site].scale)
    two = fit_sites(model, SITES, *_runs(model), stages=2, method="mean_act")
    assert all(m.method == "mean_act" for m in two.values())


class OutOfOrder(nn.Module):
    """Registers `late` before `early` but runs `early` first; records a feature map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.late = nn.Conv2d(4, 4, 1)
        self.early = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(torch.tanh(self.early(x)))


def test_forward_order_and_channel_mode():
    model = OutOfOrder().eval()
    source, target = torch.randn(24, 2, 5, 5), torch.randn(24, 2, 5, 5) * 2 + 1

    def runner(x):
        return lambda recorder: model(x)

    with torch.no_grad():
        maps = fit_sites(model, ["late", "early"], runner(source), runner(target))
    assert list(maps) == ["early", "late"]
    assert all(m.mode == "channels" and m.dim == 4 for m in maps.values())


def test_token_masks_flow_through_the_runner():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=50)
    llama = LlamaForCausalLM(config).eval()

    def runner(low: int):
        def run(recorder):
            ids = torch.randint(low, low + 25, (6, 5))
            mask = torch.ones(6, 5, dtype=torch.long)
            mask[::2, :2] = 0  # left padding
            recorder.token_mask = mask
            with torch.no_grad():
                llama(input_ids=ids, attention_mask=mask)
        return run

    sites = ["model.layers.0.post_attention_layernorm", "model.layers.1.post_attention_layernorm"]
    maps = fit_sites(llama, sites, runner(0), runner(25))
    assert list(maps) == sites and all(m.mode == "tokens" and m.dim == 16 for m in maps.values())


def test_errors_name_the_problem(model):
    with pytest.raises(FitError, match="unknown method"):
        fit_sites(model, SITES, *_runs(model), method="pca")
    with pytest.raises(FitError, match="no sites"):
        fit_sites(model, [], _runner(model, SOURCE), _runner(model, TARGET))
    with pytest.raises(FitError, match=r"never ran during the target pass"):
        fit_sites(model, SITES, _runner(model, SOURCE), lambda recorder: None)
    assert not interventions(model)
