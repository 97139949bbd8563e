"""Timestep ranges in the map file and in act_core's apply, and the committed map file with two
ranges (written by the learn node before ranges were part of the reader) through the nodes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import act_core
from act_core.errors import MapCompatibilityError, MapFileError
from act_core.timesteps import (
    maps_by_range,
    range_index,
    range_key,
    range_sites,
    split_range_key,
    timestep_ranges,
)

FIXTURE = Path(__file__).with_name("fixtures") / "maps_v1_timestep_ranges.safetensors"
SITES = ["input_blocks.1.1.norm", "middle_block.1.transformer_blocks.0.attn2.to_out.0", "out.0"]


def test_the_fixture_loads_with_its_two_ranges():
    maps = act_core.load_maps(FIXTURE)
    assert maps.metadata["version"] == 1 and maps.family == "sd15"
    assert timestep_ranges(maps) == ((0.0, 0.5), (0.5, 1.0))
    assert range_sites(maps) == SITES
    first, second = maps_by_range(maps)
    assert list(first) == list(second) == SITES
    assert not torch.equal(first["out.0"].shift, second["out.0"].shift)
    assert first["out.0"] is maps["out.0@0"] and second["out.0"] is maps["out.0@1"]


def test_keys_and_the_boundary_rule():
    assert range_key("out.0", 1, 2) == "out.0@1" and range_key("out.0", 0, 1) == "out.0"
    assert split_range_key("out.0@12") == ("out.0", 12)
    assert split_range_key("blocks.0:1") == ("blocks.0:1", 0)
    assert split_range_key("weird@name") == ("weird@name", 0)
    ranges = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0))
    assert [range_index(p, ranges) for p in (0.0, 0.25, 0.26, 0.5, 0.7, 1.0)] == [0, 0, 1, 1, 2, 2]


def _shift_map(value: float, d: int = 3):
    return act_core.fit(torch.randn(16, d), torch.randn(16, d) + value, "mean_act")


@pytest.mark.parametrize("buckets, keys, needle", [
    ([[0.0, 0.5], [0.6, 1.0]], ["0@0", "0@1"], "contiguous"),
    ([[0.0, 0.5], [0.5, 0.9]], ["0@0", "0@1"], "contiguous"),
    ([[0.0, 0.5], [0.5, 1.0]], ["0@0", "0@2"], "need keys"),
    ([[0.0, 0.5], [0.5, 1.0]], ["0@0", "0"], "need keys"),
    ("not a list", ["0"], "pairs"),
])
def test_the_reader_refuses_ranges_that_do_not_match_the_keys(tmp_path, buckets, keys, needle):
    path = act_core.save_maps(tmp_path / "m.safetensors", {k: _shift_map(1.0) for k in keys},
                              {"buckets": buckets})
    with pytest.raises(MapFileError, match=needle):
        act_core.load_maps(path)


def test_apply_transport_picks_each_ranges_maps_by_progress(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    path = act_core.save_maps(tmp_path / "r.safetensors",
                              {"0@0": _shift_map(1.0), "0@1": _shift_map(-5.0)},
                              {"buckets": [[0.0, 0.5], [0.5, 1.0]]})
    maps = act_core.load_maps(path)
    x = torch.randn(4, 3)
    with torch.no_grad():
        plain = model(x)
        expected = []
        for part in maps_by_range(maps):
            with act_core.apply_transport(model, part, 1.0, "unbounded"):
                expected.append(model(x))
        assert not torch.allclose(expected[0], expected[1])
        state = {"p": 0.0}
        with act_core.apply_transport(model, maps, 1.0, "unbounded",
                                      progress=lambda: state["p"]):
            for p, k in ((0.0, 0), (0.5, 0), (0.51, 1), (1.0, 1), (0.2, 0)):
                state["p"] = p
                assert torch.equal(model(x), expected[k]), (p, k)
        with act_core.apply_transport(model, maps, 0.0, "unbounded", progress=0.7):
            assert torch.equal(model(x), plain)
        assert torch.equal(model(x), plain)  # hooks removed
    with pytest.raises(MapCompatibilityError, match="progress="), \
            act_core.apply_transport(model, maps, 1.0):
        pass


def _recorder(net: nn.Module, norm: str, consumer: str, calls: list):
    """Hooks that record, per call of ``net``, its timestep argument, the ``norm`` site's own
    output (x, before any transport) and what its ``consumer`` receives (y, after)."""
    def on_net(module, args, kwargs):
        t = kwargs.get("timestep", kwargs.get("timesteps", args[1] if len(args) > 1 else None))
        calls.append({"t": float(torch.as_tensor(t).reshape(-1)[0])})

    def on_norm(module, args):
        # the site's own output: its class forward on its input (a hook after the forward
        # would see the transported output, since the plan patches the module's forward)
        with torch.no_grad():
            calls[-1]["x"] = type(module).forward(module, *args).detach().clone()

    def on_consumer(module, args):
        calls[-1]["y"] = args[0].detach().clone()

    return [net.register_forward_pre_hook(on_net, with_kwargs=True),
            net.get_submodule(norm).register_forward_pre_hook(on_norm),
            net.get_submodule(consumer).register_forward_pre_hook(on_consumer)]


@pytest.mark.comfyui
def test_the_fixture_applies_through_the_nodes_range_by_range(act_pack, toy_checkpoint):
    import comfy.sample
    import folder_paths
    from act_pack.act_core.apply import transport_output
    from act_pack.nodes.apply import ActApplyTransport
    from act_pack.nodes.files import ActLoadMaps

    model, clip = toy_checkpoint
    folder = Path(folder_paths.get_folder_paths("act_maps")[0])
    shutil.copyfile(FIXTURE, folder / FIXTURE.name)
    maps = ActLoadMaps.execute(FIXTURE.name).result[0]
    parts = act_pack.act_core.timesteps.maps_by_range(maps)
    encode = act_pack.nodes.learn.encode_prompts
    positive, negative = encode(clip, ["a red circle", ""])
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 3)

    def sample(m) -> torch.Tensor:
        return comfy.sample.sample(m, noise, 4, 1.0, "euler", "normal", positive, negative,
                                   latent, disable_pbar=True, seed=3)

    plain = sample(model)
    patched = ActApplyTransport.execute(model, maps, 1.0, 0.0, 1.0, "both", "from maps").result[0]
    assert torch.equal(sample(ActApplyTransport.execute(
        model, maps, 0.0, 0.0, 1.0, "both", "from maps").result[0]), plain)
    unet = patched.get_model_object("diffusion_model")
    sampling = patched.get_model_object("model_sampling")
    boundary = float(sampling.timestep(torch.tensor(sampling.percent_to_sigma(0.5))))
    calls: list = []
    handles = _recorder(unet, SITES[0], "input_blocks.1.1.proj_in", calls)
    try:
        steered = sample(patched)
    finally:
        for handle in handles:
            handle.remove()
    assert not torch.allclose(steered, plain)
    seen = set()
    for call in calls:
        k = 1 if call["t"] < boundary else 0  # sigma below the 50% sigma: the second range
        seen.add(k)
        want = transport_output(call["x"], parts[k][SITES[0]], 1.0, "unbounded")
        assert torch.allclose(call["y"], want, atol=1e-5), (call["t"], k)
    assert seen == {0, 1}
