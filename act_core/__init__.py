"""act_core: Activation Transport (AcT, Rodriguez et al., ICLR 2025) in pure PyTorch.

Fit per-unit optimal-transport maps that carry a model's activations on *source* inputs onto
those on *target* inputs, save them as safetensors, and apply them with a calibrated strength::

    import act_core

    sites = act_core.resolve_sites(model, "norms")             # where to intervene
    def run(prompts):                                        # the caller owns batching
        def go(recorder):
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            recorder.token_mask = batch["attention_mask"]    # pool non-padding tokens only
            model(**batch)
        return go
    maps = act_core.fit_sites(model, sites, run(source_prompts), run(target_prompts))
    act_core.save_maps("style.safetensors", maps, model={"family": "llama"})
    with act_core.apply_transport(model, act_core.load_maps("style.safetensors"), strength=1.0):
        model.generate(**inputs)                             # transported; hooks removed after

The package never imports ComfyUI; hosts (``nodes/``) translate their inputs into these calls.
The hosts that are libraries have their own subpackages, imported on first use so that
``import act_core`` imports neither transformers nor diffusers: ``act_core.hf`` (causal language
models, the ``act`` command) and ``act_core.diffusers`` (text-to-image pipelines).
"""

import importlib

from ._version import __version__
from .apply import apply_transport, transport_output
from .block_stacks import find_block_stacks
from .compose import apply_composed, find_conflicts
from .diagnose import Diagnosis, diagnose
from .discover import discover_sites
from .errors import (
    ActError,
    ActivationError,
    BatchSizeError,
    FitError,
    MapCompatibilityError,
    MapError,
    MapFileError,
    SiteError,
    StrengthError,
    SupportError,
)
from .estimators import (
    ESTIMATORS,
    aura,
    diff_means,
    fit,
    fit_many,
    gaussian_ot,
    linear_act,
    mean_act,
)
from .fitting import fit_sites
from .info import describe_maps
from .lineas import LineasConfig, LineasFit, fit_lineas
from .mapfile import load_maps, save_maps
from .maps import MODES, QUANTILE_LEVELS, TransportMap
from .mapset import MapSet, check_compatible, prompt_hash
from .record import Recorder, record_activations
from .schedule import APPLY_TO, ApplySettings
from .sites import PRESETS, Site, read_output, resolve_sites, write_output
from .strength import EXTRAPOLATION_BOUND, MAX_STRENGTH
from .support import SUPPORT_CHOICES, Support, parse_support
from .transport import transport, transport_channels

__all__ = [
    "ESTIMATORS", "EXTRAPOLATION_BOUND", "MAX_STRENGTH", "MODES", "PRESETS", "QUANTILE_LEVELS",
    "SUPPORT_CHOICES",
    "ActError", "ActivationError", "BatchSizeError", "Diagnosis", "FitError", "LineasConfig",
    "LineasFit",
    "MapCompatibilityError", "MapError", "MapFileError", "MapSet", "Recorder", "Site", "SiteError",
    "StrengthError", "Support", "SupportError", "TransportMap", "__version__", "apply_transport",
    "aura", "check_compatible", "diagnose", "diff_means", "discover_sites", "find_block_stacks",
    "fit", "fit_lineas", "fit_many", "fit_sites", "gaussian_ot", "linear_act", "load_maps",
    "mean_act", "parse_support", "prompt_hash", "read_output", "record_activations",
    "resolve_sites", "save_maps", "transport", "transport_channels", "transport_output",
    "write_output",
]
__all__ += ["APPLY_TO", "ApplySettings"]  # a host's apply settings, validated once (schedule.py)
__all__ += ["apply_composed", "find_conflicts"]  # several map sets at once (compose.py)
__all__ += ["describe_maps"]  # what a map file holds, as `act info` prints it (info.py)

_HOSTS = ("hf", "diffusers")  # subpackages imported on first attribute access


def __getattr__(name: str):
    if name in _HOSTS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
