"""Tiny random-weight instances of ComfyUI's image and video model families (test helper).

Each recipe is a ``comfy.supported_models`` config class and an ``unet_config`` as
``comfy.model_detection`` would read it from a checkpoint, at toy sizes; :func:`build` makes the
model with ComfyUI's own classes (``config.get_model``) and initialises its weights with torch's
initialisers (ComfyUI builds layers uninitialised). :func:`conds` makes CONDITIONING values from
seeded random tensors shaped as the family's text encoder returns them. The table of recipes
is ``harness.family_configs``.
"""

from __future__ import annotations

import torch
from torch import nn

from .family_configs import BLOCKED, EXCLUDED, FLUX_DIT, RECIPES, TOKENS, UNET, VIDEO, Recipe

__all__ = ["BLOCKED", "EXCLUDED", "FLUX_DIT", "RECIPES", "UNET", "VIDEO", "Recipe", "build",
           "conds", "flat", "init_weights", "latent"]

def init_weights(module: nn.Module, seed: int) -> None:
    """ComfyUI builds layers uninitialised (comfy.ops.disable_weight_init): run torch's init,
    and give every other parameter and buffer left empty a small random value."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        done = set()
        for m in module.modules():
            for base in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm,
                         nn.RMSNorm, nn.Embedding):
                if isinstance(m, base):
                    base.reset_parameters(m)  # torch's own; comfy's override is a no-op
                    done.update(id(p) for p in m.parameters(recurse=False))
                    break
        for name, p in module.named_parameters():
            if id(p) not in done:  # custom layers: norms' scales at 1, the rest small
                if p.ndim == 1 and ("norm" in name or name.endswith("scale")):
                    p.fill_(1.0)
                else:
                    p.normal_(std=0.02)
        for name, buffer in module.named_buffers():
            if buffer.is_floating_point() and not torch.isfinite(buffer).all():
                buffer.normal_(std=0.02)
            if name.endswith("pos_embed"):  # SD3's position table is left empty too
                buffer.normal_(std=0.02)


def build(recipe: Recipe, seed: int = 0):
    """A ModelPatcher (CPU) around the recipe's model, built with ComfyUI's classes."""
    import comfy.model_patcher
    import comfy.supported_models

    config = getattr(comfy.supported_models, recipe.config)(dict(recipe.unet_config))
    for key in type(config).unet_extra_config:  # the class's fixed full-size extras
        if key in recipe.unet_config:
            config.unet_config[key] = recipe.unet_config[key]
    gen = torch.Generator().manual_seed(seed)
    state_dict = {key: torch.randn(shape, generator=gen) * 0.1
                  for key, shape in recipe.weights.items()}
    model = config.get_model(state_dict)
    model.diffusion_model.float()
    init_weights(model.diffusion_model, seed)
    with torch.no_grad():
        for name, value in recipe.buffers.items():
            model.diffusion_model.get_buffer(name).copy_(value)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def latent(recipe: Recipe, batch: int = 1):
    """An empty latent of ``batch`` items: a tensor (B, *recipe.latent), or ComfyUI's
    NestedTensor of every stream when the recipe has more than one (video, audio)."""
    import comfy.nested_tensor

    if not recipe.streams:
        return torch.zeros(batch, *recipe.latent)
    return comfy.nested_tensor.NestedTensor(
        [torch.zeros(batch, *shape) for shape in (recipe.latent, *recipe.streams)])


def flat(samples) -> torch.Tensor:
    """Sampled latents as one tensor (the streams of a NestedTensor, flattened per item and
    concatenated), for comparisons."""
    if not getattr(samples, "is_nested", False):
        return samples
    return torch.cat([t.reshape(t.shape[0], -1) for t in samples.unbind()], dim=1)


# HiDream-O1's template: <|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n<|boi|><|tms|>
_TEMPLATE = ((151644, 872, 198), (151645, 198, 151644, 77091, 198, 151669, 151673))


def conds(recipe: Recipe, n: int, gen: torch.Generator, shift: float = 0.0) -> list:
    """``n`` CONDITIONING values ``[[context (1, T, C), {...}]]`` from seeded random tensors.

    Token-id recipes get HiDream-O1's chat template around seeded random text ids, drawn from
    ids 1000-1999, or 3000-3999 when ``shift`` is not 0 (source and target differ in words)."""
    out = []
    for _ in range(n):
        extra = dict(recipe.extra)
        if recipe.token_ids:
            low = 3000 if shift else 1000
            text = torch.randint(low, low + 1000, (TOKENS,), generator=gen).tolist()
            ids = torch.tensor([[*_TEMPLATE[0], *text, *_TEMPLATE[1]]])  # (1, T)
            out.append([[ids.unsqueeze(-1).float(), {**extra, "text_input_ids": ids}]])
            continue
        if recipe.pooled_dim is not None:
            extra["pooled_output"] = torch.randn(1, recipe.pooled_dim, generator=gen)
        context = torch.randn(1, TOKENS, recipe.context_dim, generator=gen) + shift
        out.append([[context, extra]])
    return out
