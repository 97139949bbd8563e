"""Helpers shared by the nodes: the ACT_MAPS value (an act_core MapSet), families, widths."""

from __future__ import annotations

from torch import nn

from ..act_core import MapSet
from ..act_core.sites import Site, find_module
from ..act_core.timesteps import maps_by_range as maps_by_bucket
from ..act_core.timesteps import range_sites as sites_of
from ..act_core.timesteps import timestep_ranges as buckets_of
from .families import family_of_config

__all__ = ["buckets_of", "default_support", "drop_cached_state", "family_of", "maps_by_bucket",
           "site_width", "site_widths", "sites_of"]

def family_of(model) -> str:
    """Family of a ComfyUI MODEL (ModelPatcher), e.g. ``sd15``."""
    return family_of_config(type(model.model.model_config).__name__)


def drop_cached_state(diffusion_model: nn.Module) -> None:
    """Empty what a diffusion model keeps across calls, where it exposes ``clear_kv_cache``.

    HiDream-O1 keeps the keys and values of its prompt's tokens from one call to the next,
    keyed by the token ids only. Steering changes them, so steered and plain calls must never
    share that cache: the nodes clear it around every steered call (such a call then computes
    the prompt's tokens afresh) and before every learning pass.
    """
    clear = getattr(diffusion_model, "clear_kv_cache", None)
    if callable(clear):
        clear()


def default_support(mapset: MapSet) -> str:
    return str(mapset.metadata.get("support") or "minmax")


def site_width(module: nn.Module) -> int | None:
    """Channels / features a module outputs, when its type tells (None otherwise)."""
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        shape = module.normalized_shape
        return int(shape[-1]) if shape else None
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return None


def site_widths(model: nn.Module, sites, maps) -> dict[str, int]:
    """``{site: width}`` of the sites' modules in ``model`` (the map's own D where a module's
    width cannot be read), for :func:`act_core.check_compatible`; sites the model lacks are left
    out, so that the check names them."""
    widths = {}
    for site in sites:
        try:
            module = find_module(model, Site.parse(site))
        except LookupError:
            continue
        width = site_width(module)
        widths[site] = width if width is not None else maps[site].dim
    return widths
