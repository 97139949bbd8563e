"""Translate site names of ComfyUI's SD-style UNet into diffusers' ``UNet2DConditionModel`` names.

Map files fitted with the ComfyUI nodes name ComfyUI's modules (``input_blocks.1.1.norm``);
diffusers names the same modules differently (``down_blocks.0.attentions.0.norm``). The layout
of both is fixed by the UNet config, so the translation is a pure function of the name and of
the diffusers UNet's ``layers_per_block``, ``down_block_types`` and ``up_block_types``:

===========================================  ==============================================
ComfyUI (``openaimodel.UNetModel``)           diffusers (``UNet2DConditionModel``)
===========================================  ==============================================
``input_blocks.0.0``                          ``conv_in``
``input_blocks.{1 + l(L+1) + j}.0`` / ``.1``  ``down_blocks.{l}.resnets.{j}`` / ``attentions.{j}``
``input_blocks.{(l+1)(L+1)}.0.op``            ``down_blocks.{l}.downsamplers.0.conv``
``middle_block.0`` / ``.1`` / ``.2``          ``mid_block.resnets.0`` / ``attentions.0`` /
                                              ``resnets.1``
``output_blocks.{u(L+1) + i}.0`` / ``.1``     ``up_blocks.{u}.resnets.{i}`` / ``attentions.{i}``
                                              (``upsamplers.0`` when the level has none)
``out.0`` / ``out.2``                         ``conv_norm_out`` / ``conv_out``
===========================================  ==============================================

Inside a ResBlock: ``in_layers.0`` -> ``norm1``, ``in_layers.2`` -> ``conv1``, ``out_layers.0`` ->
``norm2``, ``out_layers.3`` -> ``conv2``, ``emb_layers.1`` -> ``time_emb_proj``,
``skip_connection`` -> ``conv_shortcut``. Transformer sub-modules keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from act_core.errors import SiteError
from act_core.maps import TransportMap
from act_core.mapset import MapSet
from act_core.timesteps import RANGE_SEP, split_range_key

__all__ = ["COMFY_UNET_FAMILIES", "comfy_site_to_diffusers", "translate_comfy_maps"]

#: Families recorded by the ComfyUI nodes whose UNet follows this layout.
COMFY_UNET_FAMILIES = ("sd15", "sd2", "sdxl", "sdxl_refiner")

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2",
           "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
           "skip_connection": "conv_shortcut"}
_TOP = {"input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
        "time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2"}


def _inner(kind: str, rest: str) -> str:
    """Translate the part of a name below a ResBlock or a transformer."""
    if kind != "resnets" or not rest:
        return rest
    for old, new in _RESNET.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _down(index: int, element: int, rest: str, layers: int, attn: list[bool]) -> str:
    level, j = divmod(index - 1, layers + 1)
    if j == layers:  # the downsampler closing the level
        return _join(f"down_blocks.{level}.downsamplers.0", rest.replace("op", "conv", 1))
    kind = "resnets" if element == 0 else "attentions"
    if kind == "attentions" and not attn[level]:
        raise SiteError(f"down level {level} has no attention in this UNet")
    return _join(f"down_blocks.{level}.{kind}.{j}", _inner(kind, rest))


def _up(index: int, element: int, rest: str, layers: int, attn: list[bool]) -> str:
    level, i = divmod(index, layers + 1)
    if element == 0:
        kind, name = "resnets", f"up_blocks.{level}.resnets.{i}"
    elif element == 1 and attn[level]:
        kind, name = "attentions", f"up_blocks.{level}.attentions.{i}"
    else:
        kind, name = "upsamplers", f"up_blocks.{level}.upsamplers.0"
    return _join(name, _inner(kind, rest))


def comfy_site_to_diffusers(site: str, unet_config: Mapping[str, Any]) -> str:
    """Diffusers module name of a ComfyUI UNet site (an optional ``:<index>`` is kept).

    Parameters
    ----------
    site : str
        E.g. ``"input_blocks.1.1.transformer_blocks.0.norm1"`` or ``"out.0"``.
    unet_config : mapping
        The diffusers UNet's config (``layers_per_block``, ``down_block_types``,
        ``up_block_types``).

    Raises
    ------
    SiteError
        For a name outside the known layout.
    """
    name, sep, index = site.partition(":")
    layers = unet_config["layers_per_block"]
    layers = layers if isinstance(layers, int) else layers[0]
    down_attn = ["CrossAttn" in t for t in unet_config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in unet_config["up_block_types"]]
    for old, new in _TOP.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):] + sep + index
    match = re.fullmatch(r"(input_blocks|middle_block|output_blocks)\.(\d+)(?:\.(\d+))?(?:\.(.+))?",
                         name)
    if match is None:
        raise SiteError(f"site {site!r} is not a ComfyUI SD UNet module name; expected "
                        "input_blocks.*, middle_block.*, output_blocks.* or out.*")
    group, first, second, rest = match[1], int(match[2]), match[3], match[4] or ""
    if group == "middle_block":  # middle_block.{0,1,2}.<rest>
        kind, name_out = [("resnets", "mid_block.resnets.0"), ("attentions",
                          "mid_block.attentions.0"), ("resnets", "mid_block.resnets.1")][first]
        rest = _join(second or "", rest)
        return _join(name_out, _inner(kind, rest)) + sep + index
    element = int(second or 0)
    if group == "input_blocks":
        return _down(first, element, rest, layers, down_attn) + sep + index
    return _up(first, element, rest, layers, up_attn) + sep + index


def translate_comfy_maps(maps: Mapping[str, TransportMap], unet: Any) -> MapSet:
    """Rename the sites of ComfyUI-fitted UNet maps to the modules of a diffusers ``unet``.

    The metadata (when ``maps`` is a MapSet) is kept, with ``extra["translated_from"] =
    "comfyui"``. Timestep-range keys (``<site>@<k>``, :mod:`act_core.timesteps`) keep their
    range. Widths are checked when the maps are applied.
    """
    config = unet.config

    def rename(key: str) -> str:
        site, k = split_range_key(key)
        new = comfy_site_to_diffusers(site, config)
        return new if site == key else f"{new}{RANGE_SEP}{k}"

    renamed = {rename(key): tmap for key, tmap in maps.items()}
    metadata = maps.metadata if isinstance(maps, MapSet) else {}
    metadata.setdefault("extra", {})["translated_from"] = "comfyui"
    return MapSet(renamed, metadata)
