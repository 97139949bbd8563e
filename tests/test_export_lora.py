"""AcT Export LoRA: a LoRA file that ComfyUI's own LoRA loading gives the folded maps with.

``comfy.sd.load_lora_for_models`` (what the stock LoraLoaderModelOnly node calls) with the
exported file at strength s must sample what AcT Apply Transport in mode 'folded' (and mode
'hooks' on both CFG halves) samples at lambda = s: on the toy checkpoint and on tiny SDXL and
Flux models built with ComfyUI's own classes. Maps that cannot fold exactly are refused.
The stock node itself, through the real server, is in tests/test_export_lora_server.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness import tiny_families

pytestmark = pytest.mark.comfyui

STEPS, CFG, SEED = 3, 3.0, 11  # cfg != 1: both halves of the CFG batch run
STRENGTHS = (0.0, 0.5, 1.0)


@pytest.fixture
def loras(act_pack, tmp_path, monkeypatch):
    """models/loras in a temporary folder (never ComfyUI's own)."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                        ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def _tmap(act_pack, d: int, mode: str, gen: torch.Generator, pure_shift: bool):
    from act_pack.act_core import TransportMap

    scale = torch.ones(d) if pure_shift else 0.7 + 0.6 * torch.rand(d, generator=gen)
    levels = torch.linspace(-3, 3, 13).unsqueeze(1).expand(13, d).contiguous()
    shift = 0.2 * torch.randn(d, generator=gen)
    return TransportMap(scale=scale, shift=shift, lo=-3 * torch.ones(d), hi=3 * torch.ones(d),
                        quantiles=levels, method="test", mode=mode)


def _maps(act_pack, diffusion_model: nn.Module, family: str, support: str = "unbounded",
          group_scale: bool = False, max_sites: int = 12):
    """Maps on norm and linear sites: elementwise (omega != 1) on LayerNorms and Linears,
    pure shifts on GroupNorms (omega != 1 there too with ``group_scale``)."""
    from act_pack.act_core import MapSet

    gen = torch.Generator().manual_seed(0)
    maps = {}
    for name, m in diffusion_model.named_modules():
        if isinstance(m, nn.GroupNorm):
            maps[name] = _tmap(act_pack, m.num_channels, "channels", gen, not group_scale)
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            maps[name] = _tmap(act_pack, m.weight.shape[0], "tokens", gen, False)
        elif isinstance(m, nn.Linear) and m.bias is not None and (
                "to_out" in name or "proj" in name or "linear2" in name):
            maps[name] = _tmap(act_pack, m.out_features, "tokens", gen, False)
    chosen = dict(list(maps.items())[:max_sites])
    return MapSet(chosen, {"model": {"family": family}, "support": support})


def _export(act_pack, model, maps, prefix="act/test", **kwargs) -> str:
    return act_pack.nodes.export.ActExportLoRA.execute(model, maps, prefix, **kwargs).args[0]


def _lora_model(model, loras: Path, name: str, strength: float):
    import comfy.sd
    import comfy.utils

    lora = comfy.utils.load_torch_file(str(loras / name), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    return patched, lora


def _check_equal(act_pack, model, maps, loras, sample):
    apply = act_pack.nodes.apply
    name = _export(act_pack, model, maps)
    plain = sample(model)
    for s in STRENGTHS:
        lora_model, lora = _lora_model(model, loras, name, s)
        assert all(k.startswith("diffusion_model.") and k.rsplit(".", 1)[1] in ("diff", "diff_b")
                   for k in lora)
        patched = {k for k, v in lora_model.patches.items()
                   if len(v) > len(model.patches.get(k, []))}
        assert len(patched) == len(lora), "every key of the file must reach a weight"
        got = sample(lora_model)
        folded = sample(apply.patch_model(model, maps, s, apply_to="both", mode="folded"))
        hooks = sample(apply.patch_model(model, maps, s, apply_to="both", mode="hooks"))
        torch.testing.assert_close(got, folded, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got, hooks, rtol=1e-3, atol=1e-3)
        if s == 0.0:
            assert torch.equal(got, plain)
        else:
            assert (got - plain).abs().max() > 1e-2, "the maps should change the samples"


@pytest.fixture(scope="module")
def toy(act_pack, toy_checkpoint):
    model, clip = toy_checkpoint
    positive, negative = act_pack.nodes.learn.encode_prompts(clip, ["a red circle", ""])
    return SimpleNamespace(model=model, positive=positive, negative=negative,
                           latent=torch.zeros(1, 4, 8, 8))


def _sampler(ctx):
    import comfy.sample

    def sample(model):
        noise = comfy.sample.prepare_noise(ctx.latent, SEED)
        return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", ctx.positive,
                                   ctx.negative, ctx.latent, disable_pbar=True, seed=SEED)

    return sample


def test_toy_lora_at_strength_s_equals_folded_transport(act_pack, toy, loras):
    unet = toy.model.get_model_object("diffusion_model")
    maps = _maps(act_pack, unet, "sd15", max_sites=1000)
    assert any(isinstance(unet.get_submodule(s), nn.Linear) for s in maps)
    _check_equal(act_pack, toy.model, maps, loras, _sampler(toy))


@pytest.mark.parametrize(("change", "message"), [
    ({"support": "minmax"}, "support is 'minmax'"),
    ({"group_scale": True}, "omega != 1"),
])
def test_maps_that_do_not_fold_are_refused_with_the_reason(act_pack, toy, loras, change, message):
    unet = toy.model.get_model_object("diffusion_model")
    maps = _maps(act_pack, unet, "sd15", max_sites=1000, **change)
    with pytest.raises(ValueError, match=message) as info:
        _export(act_pack, toy.model, maps)
    assert str(info.value).startswith("AcT Export LoRA")
    assert not list(loras.rglob("*.safetensors")), "nothing is written when refused"


def test_unbounded_export_of_bounded_maps_is_explicit(act_pack, toy, loras):
    unet = toy.model.get_model_object("diffusion_model")
    maps = _maps(act_pack, unet, "sd15", support="minmax")
    name = _export(act_pack, toy.model, maps, support="unbounded")
    assert (loras / name).is_file()


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_tiny_models_lora_equals_folded_transport(act_pack, loras, family):
    recipe, model = tiny_families.build(family)
    base = model.model
    gen = torch.Generator().manual_seed(1)
    (positive,), (negative,) = (tiny_families.conds(recipe, 1, gen),
                                tiny_families.conds(recipe, 1, gen))
    ctx = SimpleNamespace(positive=positive, negative=negative,
                          latent=torch.zeros(1, recipe.latent_channels, 8, 8))
    maps = _maps(act_pack, base.diffusion_model, family)
    assert len(maps) >= 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_equal(act_pack, model, maps, loras, _sampler(ctx))
    finally:
        torch.set_num_threads(threads)


def test_kohya_key_names_are_read_by_comfyui_the_same(act_pack, toy, loras):
    unet = toy.model.get_model_object("diffusion_model")
    maps = _maps(act_pack, unet, "sd15", max_sites=1000)
    generic = _export(act_pack, toy.model, maps, "act/generic")
    kohya = _export(act_pack, toy.model, maps, "act/kohya", key_format="kohya")
    sample = _sampler(toy)
    a, _ = _lora_model(toy.model, loras, generic, 0.7)
    b, lora = _lora_model(toy.model, loras, kohya, 0.7)
    assert all(k.startswith("lora_unet_") for k in lora)
    assert any(k.endswith(".w_norm") for k in lora) and any(k.endswith(".diff_b") for k in lora)
    # kohya pairs are complete (zeros where nothing changes): a superset of the weights
    assert {k for k in a.patches if k not in toy.model.patches} <= {
        k for k in b.patches if k not in toy.model.patches}
    torch.testing.assert_close(sample(b), sample(a), rtol=1e-5, atol=1e-5)
