"""Tiny random-weight model files that ComfyUI's own stock loaders read (test helper).

The real server loads models from files only, so the server tests write them into the
server's temporary models folder (never into the repository):

* :func:`write_tiny_flux`: a Flux-schnell diffusion model for ``UNETLoader``
  (``models/diffusion_models``). ComfyUI's detection reads the widths and depths from the
  weights but fixes the rotary axes at (16, 56, 56), so a head is 128 wide: width 128, one
  head. Its text input takes 768-wide tokens and a 768-wide pooled vector, which is what the
  toy checkpoint's CLIP-L gives.
* :func:`write_tiny_sdxl_checkpoint`: an SDXL checkpoint for ``CheckpointLoaderSimple``
  (``models/checkpoints``), written by ComfyUI's own ``comfy.sd.save_checkpoint``. Detection
  wants SDXL's exact widths (320 channels, a 2048-wide context, 2816 label inputs, linear
  transformers of depths 0, 0, 2, 2, 10, 10), so the UNet has them on ONE level of six res
  blocks at an 8x8 latent (about 115 M parameters). Its CLIP-L + CLIP-G are ComfyUI's, at
  their fixed full size, with every encoder layer zero (each layer then passes its input
  through) and seeded token embeddings and projection: the conditioning is the prompt's
  embeddings, 2048 wide, and the pooled vector, as SDXL takes them.

Weights are seeded; ComfyUI builds the same classes from the files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .comfy_env import import_comfy
from .family_recipes import FLUX_DIT, UNET, Recipe, build

__all__ = ["TINY_FLUX", "TINY_SDXL", "write_tiny_flux", "write_tiny_sdxl_checkpoint"]

#: what ComfyUI's detection reads back from the file (FluxSchnell: no guidance input)
TINY_FLUX = Recipe("FluxSchnell", dict(
    FLUX_DIT, hidden_size=128, num_heads=1, axes_dim=[16, 56, 56], mlp_ratio=4.0,
    context_in_dim=768, vec_in_dim=768, depth=2, depth_single_blocks=2), 768, (16, 8, 8), 768)

TINY_SDXL = Recipe("SDXL", dict(
    UNET, model_channels=320, num_res_blocks=[6], channel_mult=[1],
    transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0] * 7,
    transformer_depth_middle=1, context_dim=2048, num_classes="sequential",
    adm_in_channels=2816), 2048, (4, 8, 8), 1280)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(path))
    return path


def write_tiny_flux(path: Path, seed: int = 0) -> Path:
    """Write the tiny Flux-schnell diffusion model (bare diffusion-model keys) to ``path``."""
    import_comfy()  # ComfyUI's classes build it
    model = build(TINY_FLUX, seed)
    return _save(model.get_model_object("diffusion_model").state_dict(), path)


def _sdxl_clip(seed: int):
    """ComfyUI's SDXL CLIP (CLIP-L + CLIP-G, fixed size, float16): layers zero (each passes its
    input through), seeded token embeddings, final norms at 1, a seeded projection."""
    import comfy.sd
    import comfy.supported_models

    cpu = torch.device("cpu")
    target = comfy.supported_models.SDXL({}).clip_target()
    clip = comfy.sd.CLIP(target=target, model_options=dict(
        load_device=cpu, offload_device=cpu, initial_device=cpu, dtype=torch.float16))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if name.endswith("token_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif name.endswith(("text_projection.weight", "text_projection")):
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            elif name.endswith("final_layer_norm.weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return clip


def write_tiny_sdxl_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the tiny SDXL checkpoint (UNet and CLIP, no VAE) with ComfyUI's own saver."""
    import_comfy()
    import comfy.sd

    path.parent.mkdir(parents=True, exist_ok=True)
    comfy.sd.save_checkpoint(str(path), build(TINY_SDXL, seed), _sdxl_clip(seed))
    return path
