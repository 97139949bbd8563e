"""Model families and their default sites (plain data, torch and act_core; no ComfyUI import).

The family is read from the ComfyUI model config's class name (``SD15``, ``SDXL``, ``Flux``...).
Site presets name modules of ComfyUI's diffusion model (``model.model.diffusion_model``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from torch import nn

from ..act_core import Site, SiteError, resolve_sites
from ..act_core.discover import discover_sites

__all__ = ["FAMILY_BY_CONFIG", "SITE_PRESETS", "STRUCTURE_PRESETS", "DEFAULT_SIZE", "arch_of",
           "choose_sites", "family_of_config", "preset_names", "preset_patterns",
           "resolve_patterns"]

FAMILY_BY_CONFIG = {
    "SD15": "sd15", "SD20": "sd2", "SD21UnclipL": "sd2", "SD21UnclipH": "sd2",
    "SDXL": "sdxl", "SDXLRefiner": "sdxl_refiner", "SSD1B": "sdxl", "Segmind_Vega": "sdxl",
    "Flux": "flux", "FluxSchnell": "flux", "FluxInpaint": "flux", "Flux2": "flux2",
    "SD3": "sd3",
}
# default latent edge in pixels when the learn node is given no latent
DEFAULT_SIZE = {"sd15": 512, "sd2": 768, "sdxl": 1024, "flux": 1024, "sd3": 1024}

_UNET = {
    "norm layers (reference)": ("norms",),
    # the norms plus where the prompt enters the image features: removes a prompt-named object
    # at strength 1 where the norms alone need about 1.25 (toy world, docs/results_toyworld.md)
    "norms + cross-attention outputs": ("norms", r"re:.*transformer_blocks\.\d+\.attn2\.to_out\.0"),
    # only where the prompt enters: adds a style that the model draws from the prompt's
    # global code (toy world: stripes at strength 1, docs/results_toyworld.md)
    "cross-attention outputs": (r"re:.*transformer_blocks\.\d+\.attn2\.to_out\.0",),
    "transformer norms": (r"re:.*transformer_blocks\.\d+\.norm[123]",),
    "attention outputs": (r"re:.*transformer_blocks\.\d+\.attn[12]\.to_out\.0",),
    "resblock norms": (r"re:.*\.(in_layers|out_layers)\.0",),
}
_FLUX = {
    "block outputs (reference)": (r"re:double_blocks\.\d+:0", r"re:double_blocks\.\d+:1",
                                  r"re:single_blocks\.\d+"),
    "double-stream blocks": (r"re:double_blocks\.\d+:0", r"re:double_blocks\.\d+:1"),
}
_MMDIT = {
    "block outputs (reference)": (r"re:joint_blocks\.\d+:0", r"re:joint_blocks\.\d+:1"),
    "image stream blocks": (r"re:joint_blocks\.\d+:1",),
}
SITE_PRESETS = {"unet": _UNET, "flux": _FLUX, "mmdit": _MMDIT}
# found by structure on any model (act_core.discover): preset label -> discovery kind.
# The first is what ``auto`` picks for an architecture without presets of its own.
STRUCTURE_PRESETS = {"block outputs (structure)": "blocks",
                     "block norms (structure)": "norms",
                     "block outputs + norms (structure)": "blocks+norms"}


def family_of_config(config_class_name: str) -> str:
    """``"SD15"`` -> ``"sd15"``; unknown configs keep their lower-cased class name."""
    return FAMILY_BY_CONFIG.get(config_class_name, config_class_name.lower())


def arch_of(diffusion_model: nn.Module) -> str:
    """``unet``, ``flux`` or ``mmdit`` (the families with presets) from the diffusion model's
    class and layout; ``other`` otherwise (sites found by structure)."""
    name = type(diffusion_model).__name__
    if name == "UNetModel" and not getattr(diffusion_model, "use_temporal_resblocks", False):
        return "unet"  # SVD's UNet (temporal layers fold frames into the batch) is 'other'
    if name.startswith("Flux") and hasattr(diffusion_model, "double_blocks"):
        return "flux"
    if ("MMDiT" in name or "MMDIT" in name) and hasattr(diffusion_model, "joint_blocks"):
        return "mmdit"  # SD3; AuraFlow's MMDiT (double_layers, single_layers) is 'other'
    return "other"


def preset_names() -> list[str]:
    """Every preset label offered by the learn node (first = default for UNets)."""
    names: list[str] = []
    for presets in SITE_PRESETS.values():
        names += [n for n in presets if n not in names]
    return names + list(STRUCTURE_PRESETS)


def preset_patterns(arch: str, preset: str) -> tuple[str, ...]:
    """Site patterns of a preset for an architecture; ValueError naming the valid presets."""
    if preset == "auto" and arch in SITE_PRESETS:
        return next(iter(SITE_PRESETS[arch].values()))
    presets = SITE_PRESETS.get(arch, {})
    if preset == "auto" or preset in STRUCTURE_PRESETS:
        raise ValueError(f"site preset {preset!r} on a {arch!r} model is found by structure, "
                         "not by patterns: use choose_sites()")
    if preset not in presets:
        raise ValueError(f"site preset {preset!r} does not apply to a {arch!r} model; "
                         f"use one of {['auto', *presets, *STRUCTURE_PRESETS, 'custom']}")
    return presets[preset]


def choose_sites(diffusion_model: nn.Module, preset: str, pattern: str = "",
                 probe: Callable[[], None] | None = None,
                 probe_double: Callable[[], None] | None = None
                 ) -> tuple[list[str], list[Site]]:
    """The sites a learn node's ``sites``/``pattern`` inputs name: (patterns, sites).

    ``auto`` is the family's first preset (the reference choice) where it has presets, and
    ``block outputs (structure)`` on any other architecture. Structure presets are found by
    :func:`act_core.discover.discover_sites`, which needs ``probe``: a callable that runs one
    forward pass of the diffusion model (the patterns returned are then the sites' names), and
    may use ``probe_double``, the same pass with twice the batch, to find each output's batch
    dim (blocks that keep the batch in dim -2, as Cosmos 1's, then get ``seq_first`` sites;
    where it raises BatchSizeError, the model takes batch 1 only and blocks without a batch
    dim, as MiniMax H3's, get ``unbatched`` sites).
    ``custom``: comma-separated patterns from ``pattern``.
    """
    arch = arch_of(diffusion_model)
    if preset == "custom":
        patterns = [p.strip() for p in pattern.split(",") if p.strip()]
        if not patterns:
            raise ValueError("sites is 'custom' but the pattern is empty: give module-name "
                             "patterns such as 're:.*norm1' or 'input_blocks.*.0.out_layers.0'")
        return patterns, resolve_patterns(diffusion_model, patterns)
    if preset == "auto" and arch not in SITE_PRESETS:
        preset = next(iter(STRUCTURE_PRESETS))
    if preset in STRUCTURE_PRESETS:
        if probe is None:
            raise ValueError(f"site preset {preset!r} needs a probe pass of the model")
        sites = discover_sites(diffusion_model, probe, STRUCTURE_PRESETS[preset],
                               run_double=probe_double)
        return [str(site) for site in sites], sites
    patterns = list(preset_patterns(arch, preset))
    return patterns, resolve_patterns(diffusion_model, patterns)


_INDEXED_REGEX = re.compile(r"(re:.+):(\d+)")


def _empty_element(module: nn.Module, index: int) -> bool:
    """True where a block returns None at ``index``: MMDiT's last joint block, ``(None, x)``."""
    return index == 0 and bool(getattr(getattr(module, "context_block", None), "pre_only", False))


def resolve_patterns(diffusion_model: nn.Module, patterns: Sequence[str]) -> list[Site]:
    """``act_core.resolve_sites``, where ``re:<regex>:<index>`` also works.

    ``resolve_sites`` reads the ``:<index>`` of a ``re:`` pattern as part of the regex; here it
    picks tuple element ``index`` of every module the regex matches (``re:double_blocks\\.\\d+:0``
    = the image stream of every Flux double block), skipping elements a block leaves empty.
    """
    modules = dict(diffusion_model.named_modules())
    specs: list[str] = []
    for pattern in patterns:
        match = _INDEXED_REGEX.fullmatch(pattern)
        if match is None:
            specs.append(pattern)
            continue
        index = int(match[2])
        specs += [f"{site.name}:{index}" for site in resolve_sites(diffusion_model, match[1])
                  if not _empty_element(modules[site.name], index)]
    if not specs:
        raise SiteError(f"site patterns {list(patterns)} match only empty block outputs; "
                        "give other patterns")
    return resolve_sites(diffusion_model, specs)
