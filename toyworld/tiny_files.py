"""Tiny random-weight model files that ComfyUI's own stock loaders read (test helper).

The real server loads models from files only, so the server tests write them into the
server's temporary models folder (never into the repository):

* :func:`write_tiny_flux`: a Flux-schnell diffusion model for ``UNETLoader``
  (``models/diffusion_models``). ComfyUI's detection reads the widths and depths from the
  weights but fixes the rotary axes at (16, 56, 56), so a head is 128 wide: width 128, one
  head. Its text input takes 768-wide tokens and a 768-wide pooled vector, which is what the
  toy checkpoint's CLIP-L gives.

Weights are seeded; ComfyUI builds the same classes from the files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .comfy_env import import_comfy
from .family_recipes import FLUX_DIT, Recipe, build

__all__ = ["TINY_FLUX", "write_tiny_flux"]

#: what ComfyUI's detection reads back from the file (FluxSchnell: no guidance input)
TINY_FLUX = Recipe("FluxSchnell", dict(
    FLUX_DIT, hidden_size=128, num_heads=1, axes_dim=[16, 56, 56], mlp_ratio=4.0,
    context_in_dim=768, vec_in_dim=768, depth=2, depth_single_blocks=2), 768, (16, 8, 8), 768)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(path))
    return path


def write_tiny_flux(path: Path, seed: int = 0) -> Path:
    """Write the tiny Flux-schnell diffusion model (bare diffusion-model keys) to ``path``."""
    import_comfy()  # ComfyUI's classes build it
    model = build(TINY_FLUX, seed)
    return _save(model.get_model_object("diffusion_model").state_dict(), path)
