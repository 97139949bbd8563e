"""AcT Export LoRA through the real ComfyUI server on tiny random-weight models of other
families, loaded from files by ComfyUI's own stock loaders.

The test writes the model file into the server's temporary models folder (never into the
repository), loads it with the stock UNETLoader, learns maps in the server (AcT Learn Transport,
unbounded support, on linear layers that fold exactly), exports them with AcT Export LoRA, and
compares the stock LoraLoaderModelOnly at strength s with AcT Apply Transport in mode 'folded'
at lambda = s. These models have no trained VAE, so the sampled latents are compared directly
(SaveLatent): the LoRA and folded latents agree within 1e-4 (far tighter than one 8-bit level
of any decoder of unit gain), strength 0 gives the plain latents, strength 1 moves them.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from toyworld.act_eval import fit_combos, heldout_combos
from toyworld.checkpoint import CHECKPOINT_NAME
from toyworld.render import Scene
from toyworld.tiny_files import write_tiny_flux

pytestmark = pytest.mark.comfyui

SEED, STEPS = 5, 4
SOURCE = "\n".join(Scene(c, s).prompt for c, s in fit_combos()[:4])
TARGET = "\n".join(Scene(c, s, "striped").prompt for c, s in fit_combos()[:4])
PROMPT = Scene(*heldout_combos()[0]).prompt
# linear layers of the blocks: their weights and biases absorb the maps exactly
FLUX_SITES = r"re:double_blocks\.\d+\.img_attn\.proj,re:single_blocks\.\d+\.linear2"


def _sampler(model: list, prefix: str, cfg: float) -> dict:
    """KSampler on ``model`` and SaveLatent: the nodes of one compared latent."""
    return {
        f"{prefix}_sample": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["lat", 0], "seed": SEED, "steps": STEPS, "cfg": cfg,
            "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        f"{prefix}_save": {"class_type": "SaveLatent", "inputs": {
            "samples": [f"{prefix}_sample", 0], "filename_prefix": f"latents/{prefix}"}},
    }


def _graph(unet: str, sites: str, cfg: float, strengths: tuple[float, ...] = (),
           lora: str = "") -> dict:
    """One prompt, stock nodes around ours: the tiny diffusion model (UNETLoader), the toy
    checkpoint's CLIP-L for the prompts, AcT Learn Transport once, AcT Export LoRA, then the
    plain model, the stock LoraLoaderModelOnly and AcT Apply Transport (folded) sampled."""
    g = {
        "ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "unet": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["ck", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ck", 1]}},
        "lat": {"class_type": "EmptySD3LatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "fit_lat": {"class_type": "EmptySD3LatentImage",
                    "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "learn": {"class_type": "ActLearnTransport", "inputs": {
            "model": ["unet", 0], "clip": ["ck", 1], "source_prompts": SOURCE,
            "target_prompts": TARGET, "sites": "custom", "pattern": sites,
            "method": "linear_act", "support": "unbounded", "incremental": False, "stages": 1,
            "collect_at": 0.0, "timestep_ranges": 1, "seed": 0, "latent": ["fit_lat", 0],
            "samples_per_prompt": 2}},
        "export": {"class_type": "ActExportLoRA", "inputs": {
            "model": ["unet", 0], "maps": ["learn", 0],
            "filename_prefix": unet.removesuffix(".safetensors") + "_lora"}},
        **_sampler(["unet", 0], "plain", cfg),
    }
    for k, strength in enumerate(strengths):
        g[f"lora{k}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["unet", 0], "lora_name": lora, "strength_model": strength}}
        g[f"fold{k}"] = {"class_type": "ActApplyTransport", "inputs": {
            "model": ["unet", 0], "maps": ["learn", 0], "strength": strength,
            "start_percent": 0.0, "end_percent": 1.0, "apply_to": "both",
            "support": "from maps", "mode": "folded"}}
        g.update(_sampler([f"lora{k}", 0], f"bylora{k}", cfg))
        g.update(_sampler([f"fold{k}", 0], f"byfold{k}", cfg))
    return g


def _latent(server, entry: dict, prefix: str) -> torch.Tensor:
    saved = entry["outputs"][f"{prefix}_save"]["latents"][0]
    path = server.base / "output" / saved["subfolder"] / saved["filename"]
    return load_file(str(path))["latent_tensor"]


def _export_lora_and_compare(server, unet: str, sites: str, cfg: float) -> None:
    strengths = (0.0, 0.5, 1.0)
    # the export runs first: the stock loader's lora_name is checked against the files there
    export = {k: v for k, v in _graph(unet, sites, cfg).items()
              if k in ("ck", "unet", "fit_lat", "learn", "export")}
    text = " ".join(server.run(export)["outputs"]["export"]["text"])
    lora = re.search(r"models/loras/(\S+\.safetensors)", text).group(1)
    assert (server.base / "models" / "loras" / lora).is_file()
    entry = server.run(_graph(unet, sites, cfg, strengths, lora))  # learn: cached
    plain = _latent(server, entry, "plain")
    for k, strength in enumerate(strengths):
        by_lora, by_folding = (_latent(server, entry, f"{how}{k}") for how in ("bylora", "byfold"))
        error = float((by_lora - by_folding).abs().max())
        assert error <= 1e-4, f"strength {strength}: LoRA and folded differ by {error}"
        effect = float((by_lora - plain).abs().max())
        assert effect <= 1e-6 if strength == 0.0 else effect > 1e-2, (strength, effect)


def test_tiny_flux_file_stock_lora_loader_equals_folded_transport(comfy_server):
    """Flux-schnell (guidance-distilled, cfg 1), loaded by UNETLoader from a file."""
    name = "act_tiny_flux.safetensors"
    write_tiny_flux(comfy_server.base / "models" / "diffusion_models" / name)
    _export_lora_and_compare(comfy_server, name, FLUX_SITES, cfg=1.0)
