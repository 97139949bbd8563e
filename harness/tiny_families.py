"""Three tiny model families for the node tests: SDXL, Flux and SD3 at toy sizes, with the
sites their presets give (built with ComfyUI's own classes; random weights, no text encoder).

Each :class:`Recipe` is a ``comfy.supported_models`` config class and an ``unet_config`` as
``comfy.model_detection`` reads it from a checkpoint; ``sites`` is what the family's reference
preset resolves to (``None``: every norm layer, :func:`norm_sites`). :func:`conds` makes
CONDITIONING values from seeded random tensors; ``harness.family_recipes.init_weights`` gives
the built models their weights (ComfyUI builds layers uninitialised). The matrix of every
family is ``harness.family_configs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RECIPES", "Recipe", "TOKENS", "build", "conds", "norm_sites"]
TOKENS = 7  # text tokens per conditioning

# unet_config as comfy.model_detection reads it from a checkpoint, at toy sizes
SDXL_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
    channel_mult=[1, 2], transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1],
    transformer_depth_middle=1, context_dim=64, use_linear_in_transformer=True,
    use_spatial_transformer=True, legacy=False, num_classes="sequential",
    adm_in_channels=2816,  # SDXL's y: pooled text (1280) + six 256-d size embeddings
    use_temporal_resblock=False, use_temporal_attention=False,
)
FLUX_DIT = dict(
    image_model="flux", in_channels=16, out_channels=16, patch_size=2, hidden_size=64, num_heads=2,
    axes_dim=[8, 12, 12],  # sums to hidden_size / num_heads
    depth=2, depth_single_blocks=2, mlp_ratio=2.0, theta=10000, qkv_bias=True,
    context_in_dim=48, vec_in_dim=32, guidance_embed=False, txt_ids_dims=[],
)
SD3_DIT = dict(
    in_channels=16, out_channels=16, patch_size=2, depth=2,  # hidden = 64 * depth, depth heads
    input_size=None, adm_in_channels=32, num_patches=64, pos_embed_max_size=8,
    context_embedder_config={"target": "torch.nn.Linear",
                             "params": {"in_features": 48, "out_features": 128}},
    pos_embed_scaling_factor=None, x_block_self_attn_layers=[],
)


@dataclass(frozen=True)
class Recipe:
    config: str  # class in comfy.supported_models
    unet_config: dict
    context_dim: int
    pooled_dim: int
    latent_channels: int
    sites: dict[str, tuple[int, str]] | None  # preset site -> (width, mode); None: every norm


RECIPES = {
    "sdxl": Recipe("SDXL", SDXL_UNET, 64, 1280, 4, None),
    # double blocks return (img, txt); single blocks return the joint token sequence
    "flux": Recipe("FluxSchnell", FLUX_DIT, 48, 32, 16, {
        "double_blocks.0:0": (64, "tokens"), "double_blocks.0:1": (64, "tokens"),
        "double_blocks.1:0": (64, "tokens"), "double_blocks.1:1": (64, "tokens"),
        "single_blocks.0": (64, "tokens"), "single_blocks.1": (64, "tokens")}),
    # joint blocks return (context, x); the last one returns (None, x): no text-stream site
    "sd3": Recipe("SD3", SD3_DIT, 48, 32, 16, {
        "joint_blocks.0:0": (128, "tokens"), "joint_blocks.0:1": (128, "tokens"),
        "joint_blocks.1:1": (128, "tokens")}),
}


def conds(recipe: Recipe, n: int, gen: torch.Generator, shift: float = 0.0) -> list:
    """``n`` CONDITIONING values: [[context (1, T, C), {"pooled_output": (1, P)}]]."""
    return [[[torch.randn(1, TOKENS, recipe.context_dim, generator=gen) + shift,
              {"pooled_output": torch.randn(1, recipe.pooled_dim, generator=gen)}]]
            for _ in range(n)]


def norm_sites(diffusion_model: nn.Module) -> dict[str, tuple[int, str]]:
    """Every GroupNorm (channels) and LayerNorm (tokens) of a UNet, in forward order."""
    sites = {}
    for name, m in diffusion_model.named_modules():
        if isinstance(m, nn.GroupNorm):
            sites[name] = (m.num_channels, "channels")
        elif isinstance(m, nn.LayerNorm):
            sites[name] = (m.normalized_shape[-1], "tokens")
    return sites


def build(name: str):
    """``(recipe, patcher)``: the tiny ``name`` model as ComfyUI would load it (its
    ``supported_models`` config and ``unet_config``), seeded random weights, wrapped in a CPU
    ``ModelPatcher``. Needs ComfyUI importable (the tests' ``act_pack`` fixture)."""
    import comfy.model_patcher
    import comfy.supported_models

    from .family_recipes import init_weights

    recipe = RECIPES[name]
    config = getattr(comfy.supported_models, recipe.config)(recipe.unet_config)
    model = config.get_model({})
    init_weights(model.diffusion_model, seed=0)
    cpu = torch.device("cpu")
    return recipe, comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
