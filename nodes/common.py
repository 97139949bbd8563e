"""Helpers shared by the nodes: the ACT_MAPS value (an act_core MapSet), families, prompts."""

from __future__ import annotations

import comfy.model_management
from torch import nn

from ..act_core.timesteps import maps_by_range as maps_by_bucket
from ..act_core.timesteps import range_sites as sites_of
from ..act_core.timesteps import timestep_ranges as buckets_of
from .families import family_of_config

__all__ = ["buckets_of", "drop_cached_state", "encode_prompt", "family_of", "maps_by_bucket",
           "sites_of"]


def encode_prompt(clip, prompt: str):
    """Encode one prompt as CLIP Text Encode does (the Cancel button stops it between prompts)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return clip.encode_from_tokens(clip.tokenize(prompt))


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
