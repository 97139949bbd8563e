"""apply_transport: hooks that transport site outputs inside a context, and nothing after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_core import (
    MapCompatibilityError,
    SiteError,
    StrengthError,
    SupportError,
    apply_transport,
    fit,
    record_activations,
)
from act_core.patch import interventions


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Linear(16, 3)).eval()


def _inputs(seed: int, n: int = 256, shift: float = 0.0, spread: float = 1.0) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed)) * spread + shift


def _pooled(model: nn.Module, site: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), record_activations(model, [site]) as recorder:
        model(x)
    return recorder.stacked()[site]


def _hooks(model: nn.Module) -> int:
    return sum(interventions(model).values())


def test_full_strength_moves_source_activations_onto_the_target():
    model = _mlp()
    source, target = _inputs(1), _inputs(2, shift=0.7, spread=1.6)
    a, b = _pooled(model, "2", source), _pooled(model, "2", target)
    maps = {"2": fit(a, b, mode="vector")}
    with torch.no_grad(), apply_transport(model, maps, 1.0):
        moved = _pooled(model, "2", source)
        out = model(source)
    torch.testing.assert_close(moved.mean(0), b.mean(0), rtol=1e-4, atol=1e-4)
    assert float(((moved.std(0) - b.std(0)).abs() / b.std(0)).max()) < 0.05
    assert float(((a.std(0) - b.std(0)).abs() / b.std(0)).max()) > 0.2  # it did move
    assert not torch.allclose(out, model(source))  # downstream layers see the change
    assert _hooks(model) == 0


def test_token_outputs_are_transported_per_token():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Identity())
    source, target = torch.randn(64, 5, 4), torch.randn(64, 5, 4) + 1
    with torch.no_grad(), record_activations(model, ["1"]) as recorder:
        model(source)
    a = recorder.stacked()["1"]
    with torch.no_grad(), record_activations(model, ["1"]) as recorder:
        model(target)
    b = recorder.stacked()["1"]
    maps = {"1": fit(a, b, mode="tokens")}
    with torch.no_grad(), apply_transport(model, maps, 1.0, "unbounded"):
        moved = model(source)
    plain = model(source)
    torch.testing.assert_close(moved, plain * maps["1"].scale + maps["1"].shift)
    torch.testing.assert_close(moved.mean(dim=(0, 1)), b.mean(0), rtol=1e-4, atol=1e-4)


def test_zero_strength_installs_nothing_and_is_bit_identical():
    model = _mlp()
    x = _inputs(3, 16)
    maps = {"2": fit(_pooled(model, "2", x), _pooled(model, "2", x + 1), mode="vector")}
    before = model(x)
    with apply_transport(model, maps, 0.0):
        assert _hooks(model) == 0
        assert torch.equal(model(x), before)
    with apply_transport(model, maps, lambda: 0.0):
        assert torch.equal(model(x), before)
    with apply_transport(model, maps, torch.zeros(16)):
        assert torch.equal(model(x), before)


def test_hooks_are_removed_after_an_exception_and_maps_are_untouched():
    model = _mlp()
    x = _inputs(4, 8)
    maps = {"2": fit(_pooled(model, "2", x), _pooled(model, "2", x * 2), mode="vector")}
    scale = maps["2"].scale.clone()
    before = model(x)
    with pytest.raises(RuntimeError):
        with apply_transport(model, maps, 1.0):
            assert _hooks(model) == 1
            model(torch.randn(2, 5))
    assert _hooks(model) == 0 and torch.equal(model(x), before)
    with pytest.raises(KeyError):
        with apply_transport(model, maps, 1.0):
            raise KeyError("user code failed")
    assert _hooks(model) == 0 and torch.equal(model(x), before)
    assert torch.equal(maps["2"].scale, scale)


def test_callable_and_per_item_strengths():
    model = _mlp()
    x = _inputs(5, 4)
    maps = {"2": fit(_pooled(model, "2", x), _pooled(model, "2", x + 2), mode="vector")}
    calls = []

    def schedule():
        calls.append(1)
        return torch.tensor([0.0, 1.0, 0.0, 1.0]) if len(calls) % 2 else 0.0

    with torch.no_grad(), apply_transport(model, maps, schedule):
        mixed, plain = model(x), model(x)
    with torch.no_grad(), apply_transport(model, maps, 1.0):
        full = model(x)
    assert len(calls) == 2 and torch.equal(plain, model(x))
    assert torch.equal(mixed[0::2], plain[0::2]) and torch.equal(mixed[1::2], full[1::2])


def test_tuple_output_site_replaces_only_its_element():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(6, 2, batch_first=True).eval()
    x = torch.randn(3, 4, 6)
    plain, weights = attn(x, x, x)
    tmap = fit(torch.randn(10, 6), torch.randn(10, 6) + 3)
    holder = nn.Sequential()
    holder.add_module("attn", attn)
    with torch.no_grad(), apply_transport(holder, {"attn:0": tmap}, 1.0, "unbounded"):
        moved, moved_weights = holder.attn(x, x, x)
    torch.testing.assert_close(moved, plain * tmap.scale + tmap.shift)
    assert torch.equal(moved_weights, weights)


def test_channel_maps_act_on_feature_map_means():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4)).eval()
    source, target = torch.randn(32, 2, 6, 6), torch.randn(32, 2, 6, 6) * 2 + 1
    with torch.no_grad(), record_activations(model, ["0"]) as recorder:
        model(source)
        a = recorder.stacked()["0"]
        recorder.clear()
        model(target)
        b = recorder.stacked()["0"]
    maps = {"0": fit(a, b, mode="channels")}
    with torch.no_grad(), apply_transport(model, maps, 1.0), record_activations(
            model, ["0"]) as recorder:
        model(source)
    torch.testing.assert_close(recorder.stacked()["0"].mean(0), b.mean(0), rtol=1e-4, atol=1e-4)


def test_entry_and_hook_time_validation():
    model = _mlp()
    tmap = fit(torch.randn(10, 16), torch.randn(10, 16))
    with pytest.raises(SiteError, match="no module named '9'"):
        with apply_transport(model, {"9": tmap}):
            pass
    with pytest.raises(SupportError):
        with apply_transport(model, {"2": tmap}, 1.0, "q0.33-0.66"):
            pass
    with pytest.raises(StrengthError, match="inverse"):
        with apply_transport(model, {"2": tmap}, -1.0):
            pass
    with pytest.raises(MapCompatibilityError, match="site '3'.*D=16.*\\(2, 3\\)"):
        with apply_transport(model, {"3": tmap}):
            model(torch.randn(2, 8))
    assert _hooks(model) == 0
