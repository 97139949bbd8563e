"""Diffusers integration on a tiny config-built Stable Diffusion pipeline (no downloads)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from act_core.diffusers import pipeline as dp
from act_core.errors import MapCompatibilityError
from act_core.record import record_activations

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

SOURCE = ["a red circle", "a red square", "a red dot", "a red ring", "a red box", "a red star"]
TARGET = ["a blue circle", "a blue square", "a blue dot", "a blue ring", "a blue box",
          "a blue star", "a blue sky"]


def _tokenizer(tmp_path):
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per letter
    return transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                                      model_max_length=16)


def tiny_pipeline(tmp_path, block_out_channels=(32, 64)):
    torch.manual_seed(0)
    tokenizer = _tokenizer(tmp_path)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, projection_dim=32, bos_token_id=0,
        eos_token_id=1, pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=block_out_channels,
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(16,), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=8, sample_size=8)
    scheduler = diffusers.DDIMScheduler(clip_sample=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe, prompt="a red circle"):
    out = pipe(prompt, num_inference_steps=2, height=8, width=8, output_type="pt",
               generator=torch.Generator().manual_seed(0))
    return out.images


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("tok"))


def test_presets_resolve_on_the_unet(pipe):
    norms = [str(s) for s in dp.pipeline_sites(pipe, "norms")]
    assert "conv_norm_out" in norms and any("transformer_blocks.0.norm1" in s for s in norms)
    assert all(s.endswith("to_out.0") for s in map(str, dp.pipeline_sites(pipe, "attn_out")))
    assert dp.pipeline_hint(pipe)["family"] == "diffusers:UNet2DConditionModel"


def test_run_prompts_records_one_step_one_row_per_prompt(pipe):
    sites = dp.pipeline_sites(pipe, "norms")[:3]
    with record_activations(dp.denoiser(pipe), sites) as recorder:
        dp.run_prompts(pipe, SOURCE, steps=3, batch_size=4, height=8, width=8)
    assert all(n == len(SOURCE) for n in recorder.counts().values())  # first step, cond only


@pytest.mark.slow  # several seconds: left out of the fast command
def test_fit_modes_and_mean_matching(pipe):
    maps = dp.fit_pipeline(pipe, SOURCE, TARGET, "norms", method="mean_act", incremental=False,
                           height=8, width=8)
    modes = {site: m.mode for site, m in maps.items()}
    assert modes["conv_norm_out"] == "channels"
    assert any(mode == "tokens" for site, mode in modes.items() if "transformer_blocks" in site)
    site = next(iter(maps))  # the first site in forward order sees no earlier map
    net = dp.denoiser(pipe)

    def mean_at(prompts, strength):
        with dp.steer_pipeline(pipe, {site: maps[site]}, strength, "unbounded"), \
                record_activations(net, [site]) as rec:
            dp.run_prompts(pipe, prompts, height=8, width=8)
        return rec.stacked()[site].mean(0)

    target_mean = mean_at(TARGET, 0.0)
    assert torch.allclose(mean_at(SOURCE, 1.0), target_mean, atol=1e-4)
    assert not torch.allclose(mean_at(SOURCE, 0.0), target_mean, atol=1e-4)


def test_steer_changes_images_only_with_strength_and_cleans_up(pipe, tmp_path):
    maps = dp.fit_pipeline(pipe, SOURCE, TARGET, "norms", stages=2, height=8, width=8)
    base = _image(pipe)
    with dp.steer_pipeline(pipe, maps, 0.0):
        assert torch.equal(_image(pipe), base)
    with dp.steer_pipeline(pipe, maps, 1.0, "unbounded"):
        steered = _image(pipe)
    assert not torch.allclose(steered, base)
    assert torch.equal(_image(pipe), base)  # hooks removed
    path = dp.save_pipeline_maps(tmp_path / "m.safetensors", maps, pipe, source_prompts=SOURCE,
                                 target_prompts=TARGET)
    loaded = dp.load_pipeline_maps(path, pipe)
    with dp.steer_pipeline(pipe, loaded, 1.0, "unbounded"):
        assert torch.allclose(_image(pipe), steered)


def _first_noise_predictions(pipe, **steer) -> torch.Tensor:
    """The denoiser's output (2B, ...) at the first step of a CFG call (unconditional half
    first), plain or inside ``steer_pipeline(pipe, **steer)``."""
    outputs = []
    handle = pipe.unet.register_forward_hook(lambda m, a, o: outputs.append(
        (o[0] if isinstance(o, tuple) else o.sample).clone()))
    try:
        with (dp.steer_pipeline(pipe, **steer) if steer else contextlib.nullcontext()):
            _image(pipe)
    finally:
        handle.remove()
    return outputs[0]


def test_apply_to_transports_one_cfg_half_only(pipe):
    maps = dp.fit_pipeline(pipe, SOURCE, TARGET, "norms", stages=1, height=8, width=8)
    plain = _first_noise_predictions(pipe)
    half = plain.shape[0] // 2
    both = _first_noise_predictions(pipe, maps=maps, strength=1.0, support="unbounded")
    cond = _first_noise_predictions(pipe, maps=maps, strength=1.0, support="unbounded",
                                    apply_to="conditional")
    uncond = _first_noise_predictions(pipe, maps=maps, strength=1.0, support="unbounded",
                                      apply_to="unconditional")
    assert not torch.allclose(both[:half], plain[:half]) and not torch.allclose(
        both[half:], plain[half:])
    assert torch.equal(cond[:half], plain[:half]) and torch.allclose(cond[half:], both[half:])
    assert torch.equal(uncond[half:], plain[half:]) and torch.allclose(uncond[:half], both[:half])
    late = _first_noise_predictions(pipe, maps=maps, strength=1.0, support="unbounded",
                                    start_percent=0.5)
    assert torch.equal(late, plain)  # the first step is at progress ~0: outside 0.5-1


def test_maps_of_another_architecture_are_refused(pipe, tmp_path):
    other = tiny_pipeline(tmp_path, block_out_channels=(16, 32))
    maps = dp.fit_pipeline(other, SOURCE[:3], TARGET[:3], "cross_attn_out", incremental=False,
                           height=8, width=8)
    path = dp.save_pipeline_maps(tmp_path / "other.safetensors", maps, other)
    with pytest.raises(MapCompatibilityError, match="block_out_channels"):
        dp.load_pipeline_maps(path, pipe)


_TB = "transformer_blocks.0"
COMFY_TO_DIFFUSERS = {  # the tiny UNet: 2 levels, 1 layer per block, attention at level 0 only
    "input_blocks.0.0": "conv_in",
    "input_blocks.1.0.in_layers.0": "down_blocks.0.resnets.0.norm1",
    "input_blocks.1.0.out_layers.0": "down_blocks.0.resnets.0.norm2",
    "input_blocks.1.1.norm": "down_blocks.0.attentions.0.norm",
    f"input_blocks.1.1.{_TB}.norm2": f"down_blocks.0.attentions.0.{_TB}.norm2",
    f"input_blocks.1.1.{_TB}.attn2.to_out.0": f"down_blocks.0.attentions.0.{_TB}.attn2.to_out.0",
    "input_blocks.2.0.op": "down_blocks.0.downsamplers.0.conv",
    "input_blocks.3.0.in_layers.0": "down_blocks.1.resnets.0.norm1",
    "input_blocks.3.0.skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
    "middle_block.0.in_layers.0": "mid_block.resnets.0.norm1",
    f"middle_block.1.{_TB}.norm1": f"mid_block.attentions.0.{_TB}.norm1",
    "middle_block.2.out_layers.0:0": "mid_block.resnets.1.norm2:0",
    "output_blocks.0.0.in_layers.0": "up_blocks.0.resnets.0.norm1",
    "output_blocks.1.1.conv": "up_blocks.0.upsamplers.0.conv",
    "output_blocks.2.1.norm": "up_blocks.1.attentions.0.norm",
    "output_blocks.3.0.out_layers.0": "up_blocks.1.resnets.1.norm2",
    f"output_blocks.3.1.{_TB}.norm3": f"up_blocks.1.attentions.1.{_TB}.norm3",
    "out.0": "conv_norm_out",
}


def test_comfyui_site_names_translate_to_existing_diffusers_modules(pipe):
    from act_core.diffusers.names import comfy_site_to_diffusers, translate_comfy_maps
    from act_core.errors import SiteError
    from act_core.estimators import fit

    unet = dp.denoiser(pipe)
    modules = dict(unet.named_modules())
    for comfy, expected in COMFY_TO_DIFFUSERS.items():
        assert comfy_site_to_diffusers(comfy, unet.config) == expected
        assert expected.partition(":")[0] in modules
    with pytest.raises(SiteError, match="ComfyUI SD UNet"):
        comfy_site_to_diffusers("double_blocks.0", unet.config)
    tmap = fit(torch.randn(8, 32), torch.randn(8, 32) + 1, "mean_act", mode="channels")
    translated = translate_comfy_maps({"input_blocks.1.1.norm": tmap}, unet)
    assert list(translated) == ["down_blocks.0.attentions.0.norm"]
    with dp.steer_pipeline(pipe, translated, 1.0):
        _image(pipe)


def test_a_comfyui_map_file_loads_on_a_diffusers_pipeline(pipe, tmp_path):
    from act_core.estimators import fit
    from act_core.mapfile import save_maps

    tmap = fit(torch.randn(8, 64), torch.randn(8, 64) + 1, "linear_act", mode="channels")
    path = save_maps(tmp_path / "comfy.safetensors", {"middle_block.0.in_layers.0": tmap},
                     model={"family": "sd15"})
    loaded = dp.load_pipeline_maps(path, pipe)
    assert list(loaded) == ["mid_block.resnets.0.norm1"]
    save_maps(path, {"output_blocks.3.0.out_layers.0": tmap}, model={"family": "sd15"})
    with pytest.raises(MapCompatibilityError, match="width"):
        dp.load_pipeline_maps(path, pipe)  # that norm has 32 channels, the map 64


@pytest.mark.slow  # several seconds: left out of the fast command
def test_the_nodes_map_file_with_timestep_ranges_steers_a_diffusers_unet(tmp_path):
    """The committed map file (learn node, toy SD1.5 UNet, two timestep ranges) on a diffusers
    UNet with the same channel layout: each step gets the maps of its range."""
    from pathlib import Path

    from act_core.apply import transport_output
    from act_core.timesteps import maps_by_range

    fixture = Path(__file__).with_name("fixtures") / "maps_v1_timestep_ranges.safetensors"
    pipe = tiny_pipeline(tmp_path, block_out_channels=(320, 320))
    maps = dp.load_pipeline_maps(fixture, pipe)
    norm = "down_blocks.0.attentions.0.norm"
    assert list(maps)[:3] == [f"{norm}@0", "mid_block.attentions.0.transformer_blocks.0.attn2."
                              "to_out.0@0", "conv_norm_out@0"]
    parts = maps_by_range(maps)
    net = dp.denoiser(pipe)
    calls: list = []

    def on_net(module, args, kwargs):
        calls.append({"t": float(torch.as_tensor(kwargs.get("timestep", args[1])).reshape(-1)[0])})

    handles = [net.register_forward_pre_hook(on_net, with_kwargs=True),
               # the norm's own output, recomputed from its input: a hook after its forward
               # sees the transported output (the plan patches the module's forward)
               net.get_submodule(norm).register_forward_pre_hook(
                   lambda m, a: calls[-1].update(x=type(m).forward(m, *a).detach().clone())),
               net.get_submodule("down_blocks.0.attentions.0.proj_in").register_forward_pre_hook(
                   lambda m, a: calls[-1].update(y=a[0].detach().clone()))]
    try:
        base = _image(pipe)
        with dp.steer_pipeline(pipe, maps, 1.0, "unbounded"):
            steered = _image(pipe)
    finally:
        for handle in handles:
            handle.remove()
    assert not torch.allclose(steered, base)
    steps = calls[len(calls) // 2:]  # the steered run (2 steps; DDIM timesteps 501 and 1)
    assert [c["t"] for c in steps] == [501.0, 1.0]
    for call, k in zip(steps, (0, 1)):  # progress 1 - t/1000: 0.499 -> range 0, 0.999 -> 1
        want = transport_output(call["x"], parts[k][norm], 1.0, "unbounded")
        assert torch.allclose(call["y"], want, atol=1e-5), k
    assert not torch.allclose(steps[0]["y"], transport_output(
        steps[0]["x"], parts[1][norm], 1.0, "unbounded"), atol=1e-3)
