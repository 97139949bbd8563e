"""ActApplyTransport's mode 'folded' on the toy checkpoint, in-process with ComfyUI's classes.

Folding a map into the affine weights of its norm layer must give the same samples as the
hooks (where it is exact: elementwise maps on LayerNorms, pure shifts on GroupNorms, unbounded
support, both CFG halves, a fixed strength over the whole schedule), must leave the input MODEL
unchanged, and must refuse every other case with the reason.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.comfyui

STEPS, CFG, SEED = 3, 3.0, 11  # cfg != 1: both halves of the CFG batch run


@pytest.fixture(scope="module")
def toy(act_pack, toy_checkpoint):
    model, clip = toy_checkpoint
    encode = act_pack.nodes.learn.encode_prompts
    positive, negative = encode(clip, ["a red circle", ""])
    return model, positive, negative


def _maps(act_pack, model, *, channel_scale: float = 1.0, buckets: int = 1, seed: int = 0):
    """Maps on every norm site of the toy UNet: tokens maps (omega != 1) on the LayerNorms,
    channel maps with scale ``channel_scale`` (1 = a pure shift) on the GroupNorms."""
    from act_pack.act_core import MapSet, TransportMap
    from act_pack.act_core.sites import resolve_sites

    unet = model.get_model_object("diffusion_model")
    generator = torch.Generator().manual_seed(seed)
    maps = {}
    for site in resolve_sites(unet, "norms"):
        module = unet.get_submodule(site.name)
        d = module.num_channels if isinstance(module, nn.GroupNorm) else module.weight.shape[-1]
        channels = isinstance(module, nn.GroupNorm)
        scale = (torch.full((d,), channel_scale) if channels
                 else 0.8 + 0.4 * torch.rand(d, generator=generator))
        lo, hi = -torch.ones(d) * 3, torch.ones(d) * 3
        levels = torch.linspace(-3, 3, 13).unsqueeze(1).expand(13, d).contiguous()
        tmap = TransportMap(scale=scale, shift=0.1 * torch.randn(d, generator=generator), lo=lo,
                            hi=hi, quantiles=levels, method="test",
                            mode="channels" if channels else "tokens")
        for bucket in range(buckets):
            maps[str(site) if buckets == 1 else f"{site}@{bucket}"] = tmap
    extra = {"buckets": [[k / buckets, (k + 1) / buckets] for k in range(buckets)]}
    return MapSet(maps, {"model": {"family": "sd15"}, "support": "unbounded", "extra": extra})


def _sample(model, toy) -> torch.Tensor:
    import comfy.sample

    _, positive, negative = toy
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, SEED)
    return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", positive, negative,
                               latent, disable_pbar=True, seed=SEED)


def _norm_weights(model) -> dict[str, torch.Tensor]:
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    unet = model.get_model_object("diffusion_model")
    return {k: v.detach().clone() for k, v in unet.state_dict().items() if "norm" in k
            or "in_layers.0" in k or "out_layers.0" in k or k.startswith("out.0")}


def test_folded_sampling_equals_hooks_and_leaves_the_model_unchanged(act_pack, toy):
    model = toy[0]
    apply = act_pack.nodes.apply
    maps = _maps(act_pack, model)
    patches_before = {k: list(v) for k, v in model.patches.items()}
    weights_before = _norm_weights(model)
    plain = _sample(model, toy)
    hooks = _sample(apply.patch_model(model, maps, 0.8, apply_to="both", mode="hooks"), toy)
    folded_model = apply.ActApplyTransport.execute(
        model, maps, 0.8, 0.0, 1.0, "both", "from maps", "folded").args[0]
    assert not folded_model.wrappers.get("apply_model"), "folded mode must add no wrapper"
    folded = _sample(folded_model, toy)
    assert (hooks - plain).abs().max() > 1e-2, "the maps should change the samples"
    torch.testing.assert_close(folded, hooks, rtol=1e-4, atol=1e-4)
    # the input MODEL: same patches, same weights, same samples after the folded one ran
    assert {k: list(v) for k, v in model.patches.items()} == patches_before
    after = _norm_weights(model)
    assert all(torch.equal(after[k], weights_before[k]) for k in weights_before)
    assert torch.equal(_sample(model, toy), plain)
    # strength 0 folds nothing
    zero = apply.patch_model(model, maps, 0.0, apply_to="both", mode="folded")
    assert zero.patches == model.patches


@pytest.mark.parametrize(("change", "message"), [
    ({"apply_to": "conditional"}, "apply_to is 'conditional'"),
    ({"support": "minmax"}, "support is 'minmax'"),
    ({"support": "q0.05-0.95"}, "support"),
    ({"start_percent": 0.2}, "part of the schedule|0.2-1 of the schedule"),
    ({"end_percent": 0.5}, "of the schedule"),
    ({"channel_scale": 1.1}, "omega != 1"),
    ({"buckets": 2}, "2 timestep ranges"),
])
def test_cases_that_cannot_be_folded_exactly_are_refused(act_pack, toy, change, message):
    model = toy[0]
    maps = _maps(act_pack, model, channel_scale=change.pop("channel_scale", 1.0),
                 buckets=change.pop("buckets", 1))
    kwargs = {"apply_to": "both", "support": "from maps", **change}
    with pytest.raises(ValueError, match=message) as info:
        act_pack.nodes.apply.patch_model(model, maps, 1.0, mode="folded", **kwargs)
    assert "use mode 'hooks'" in str(info.value)


def test_sites_that_are_not_affine_norms_are_refused(act_pack, toy):
    from act_pack.act_core import MapSet

    model = toy[0]
    maps = _maps(act_pack, model)
    group_site = "input_blocks.1.0.in_layers.0"
    layer_site = "input_blocks.1.1.transformer_blocks.0.norm1"
    conv = dict(maps)
    conv["input_blocks.1.0"] = maps[group_site]  # the whole ResBlock (same width)
    wrong_mode = dict(maps)
    wrong_mode[group_site] = maps[layer_site]  # a tokens map on a GroupNorm (same width)
    metadata = maps.metadata
    for bad, message in ((conv, r"\(ResBlock\) has no affine weight"),
                         (wrong_mode, "'tokens' mode")):
        with pytest.raises(ValueError, match=message):
            act_pack.nodes.apply.patch_model(model, MapSet(bad, metadata), 1.0, apply_to="both",
                                             mode="folded")
