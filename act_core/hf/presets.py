"""Site presets for transformers causal LMs, and the model hint stored in map files.

Presets are data: ``PRESETS[family][preset]`` is a tuple of regular expressions matched in full
against ``model.named_modules()`` names. Every preset names modules whose output is
``(batch, tokens, hidden)``, so each site is a "tokens" site of width ``hidden``.

==============  ==========================================================================
preset          modules (Llama-style names; Gemma and GPT-2 equivalents in the table below)
==============  ==========================================================================
``post_norms``  the two norms of every block: Gemma-2/3 ``post_attention_layernorm`` and
                ``post_feedforward_layernorm`` (the paper's choice); Llama-style, which has no
                post-norms, ``input_layernorm`` and ``post_attention_layernorm``; GPT-2
                ``ln_1``, ``ln_2``
``layernorms``  every norm on the residual width, including the final one (not q/k norms)
``attn_out``    the attention output projections (``o_proj``; GPT-2 ``attn.c_proj``)
``mlp_out``     the feed-forward output projections (``down_proj``; GPT-2 ``mlp.c_proj``)
==============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from act_core.errors import SiteError

__all__ = [
    "FAMILIES",
    "PRESETS",
    "UnknownFamilyError",
    "detect_family",
    "model_hint",
    "preset_names",
    "preset_patterns",
    "site_patterns",
]

_L = r"(?:.+\.)?layers\.\d+\."  # Llama/Gemma/Qwen/Mistral blocks, with or without a wrapper
_H = r"(?:.+\.)?h\.\d+\."  # GPT-2 blocks

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": {
        "post_norms": (_L + r"input_layernorm", _L + r"post_attention_layernorm"),
        "layernorms": (_L + r"input_layernorm", _L + r"post_attention_layernorm",
                       r"(?:.+\.)?model\.norm|norm"),
        "attn_out": (_L + r"self_attn\.o_proj",),
        "mlp_out": (_L + r"mlp\.down_proj",),
    },
    "gemma": {
        "post_norms": (_L + r"post_attention_layernorm", _L + r"post_feedforward_layernorm"),
        "layernorms": (_L + r"input_layernorm", _L + r"post_attention_layernorm",
                       _L + r"pre_feedforward_layernorm", _L + r"post_feedforward_layernorm",
                       r"(?:.+\.)?model\.norm|(?:.+\.)?language_model\.norm|norm"),
        "attn_out": (_L + r"self_attn\.o_proj",),
        "mlp_out": (_L + r"mlp\.down_proj",),
    },
    "gpt2": {
        "post_norms": (_H + r"ln_1", _H + r"ln_2"),
        "layernorms": (_H + r"ln_1", _H + r"ln_2", r"(?:.+\.)?ln_f"),
        "attn_out": (_H + r"attn\.c_proj",),
        "mlp_out": (_H + r"mlp\.c_proj",),
    },
}

# config.model_type -> preset family
FAMILIES: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "llama", "qwen3": "llama",
    "smollm3": "llama", "olmo": "llama", "olmo2": "llama", "granite": "llama",
    "gemma": "llama", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma",
    "gpt2": "gpt2",
}


class UnknownFamilyError(SiteError):
    """No preset is known for a model's family."""


def detect_family(model: Any) -> str:
    """Preset family of a transformers model, from ``model.config.model_type``.

    Raises
    ------
    UnknownFamilyError
        For a model type with no preset; the message says how to name sites by pattern instead.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnknownFamilyError(
            f"no site preset for model type {model_type!r} (presets exist for "
            f"{sorted(FAMILIES)}); fix: name the sites with regular expressions over "
            "model.named_modules(), e.g. --sites 'model\\.layers\\.\\d+\\.input_layernorm'"
        )
    return FAMILIES[model_type]


def preset_names() -> list[str]:
    """Names of the presets (the same for every family)."""
    return sorted(PRESETS["llama"])


def preset_patterns(model: Any, preset: str) -> tuple[str, ...]:
    """Regular expressions of ``preset`` for ``model``'s family."""
    family = PRESETS[detect_family(model)]
    if preset not in family:
        raise SiteError(f"unknown preset {preset!r}; use one of {preset_names()}")
    return family[preset]


def site_patterns(model: Any, sites: str | Sequence[str]) -> list[str]:
    """Patterns for :func:`act_core.sites.resolve_sites` from a preset name or user patterns.

    A preset name of this module (:func:`preset_names`) becomes its family's regular expressions
    (``re:`` prefixed); anything else (a glob, a ``re:`` pattern, a core preset such as
    ``"norms"``) is passed through unchanged.
    """
    specs = [sites] if isinstance(sites, str) else list(sites)
    out: list[str] = []
    for spec in specs:
        if spec in preset_names():
            out.extend("re:" + p for p in preset_patterns(model, spec))
        else:
            out.append(spec)
    return out


def model_hint(model: Any) -> dict[str, Any]:
    """What a map file records about the model it was fitted on.

    ``{"family", "model_type", "name_or_path", "num_layers", "hidden"}``; ``family`` is the preset
    family, or the model type when no preset exists.
    """
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    text_config = getattr(config, "get_text_config", lambda: config)()
    return {
        "family": FAMILIES.get(model_type, model_type),
        "model_type": model_type,
        "name_or_path": str(getattr(config, "name_or_path", "") or ""),
        "num_layers": int(getattr(text_config, "num_hidden_layers", 0)),
        "hidden": int(getattr(text_config, "hidden_size", 0)),
    }
