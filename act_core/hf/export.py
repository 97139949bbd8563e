"""Fold maps at a fixed strength into a transformers checkpoint of the model's own architecture.

With the unbounded support a map at strength ``lambda`` is ``y = a x + c`` per unit
(``a = 1 + lambda (omega - 1)``, ``c = lambda beta``; :mod:`act_core.fold`). On a Llama-family
model each preset site has a place where that is exact:

===============================  ==========================================================
site                             where ``a`` and ``c`` go
===============================  ==========================================================
``self_attn.o_proj``             rows of its weight times ``a``; bias ``c`` (config
                                 ``attention_bias``; q/k/v get zero biases too)
``mlp.down_proj``                rows times ``a``; bias ``c`` (config ``mlp_bias``; gate/up
                                 get zero biases too)
``input_layernorm``              norm weight times ``a``; ``c`` enters q, k, v as
                                 ``bias += W c`` (config ``attention_bias``)
``post_attention_layernorm``     norm weight times ``a``; ``c`` enters gate and up as
                                 ``bias += W c`` (config ``mlp_bias``)
final ``model.norm``             weight times ``a``; a shift is refused (``lm_head`` has no
                                 bias in the config)
===============================  ==========================================================

The result is an ordinary checkpoint folder (``save_pretrained``, safetensors) that
``AutoModelForCausalLM.from_pretrained`` loads with no import of this package, and that serving
engines which read transformers checkpoints run at the unsteered model's cost. Everything else
(a bounded support, maps that skip the first token, other site kinds or families) is refused
with the reason (:class:`~act_core.fold.FoldError`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from act_core.fold import FoldError, check_foldable, fold_deltas
from act_core.gate import check_ungated
from act_core.maps import TransportMap
from act_core.mapset import MapSet
from act_core.support import parse_support

__all__ = ["EXPORT_INFO", "export_checkpoint", "fold_lm"]

log = logging.getLogger(__name__)

#: File written next to the checkpoint: the maps' metadata, strength and sites.
EXPORT_INFO = "act_export.json"
_FAMILIES = ("llama",)  # config.model_type values with the bias flags used here
_SITE = re.compile(r"^(?P<block>(?:.+\.)?layers\.\d+)\.(?P<kind>input_layernorm|"
                   r"post_attention_layernorm|self_attn\.o_proj|mlp\.down_proj)$")
_FINAL_NORM = re.compile(r"^(?:.+\.)?norm$")
_CONSUMERS = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
              "self_attn.o_proj": (), "mlp.down_proj": ()}
_FLAG = {"input_layernorm": "attention_bias", "self_attn.o_proj": "attention_bias",
         "post_attention_layernorm": "mlp_bias", "mlp.down_proj": "mlp_bias"}


def _check(model: Any, maps: Mapping[str, TransportMap], support: str) -> dict[str, str]:
    """Validate; return ``{site: kind}`` (kind: a key of _CONSUMERS, or "final_norm")."""
    check_ungated(maps, "a folded checkpoint")
    if parse_support(support).kind != "unbounded":
        raise FoldError(f"the support is {support!r}: a bounded support transports a value only "
                        "inside its range, which no fixed weight does; export with support "
                        "'unbounded' (act export --support unbounded) or steer with hooks")
    extra = (maps.metadata.get("extra") or {}) if isinstance(maps, MapSet) else {}
    if extra.get("skip_first_token"):
        raise FoldError("the maps leave each sequence's first token unchanged "
                        "(skip_first_token); folded weights change every token: refit without "
                        "--skip-first-token, or steer with hooks")
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _FAMILIES:
        raise FoldError(f"exporting folded checkpoints supports model_type {_FAMILIES}, found "
                        f"{model_type!r} (its config has no flags to add the biases a shift "
                        "needs); steer it with hooks (act generate)")
    modules = dict(model.named_modules())
    kinds = {}
    for site, tmap in maps.items():
        match = _SITE.match(site)
        kind = match["kind"] if match else ("final_norm" if _FINAL_NORM.match(site) else None)
        if kind is None or site not in modules:
            raise FoldError(f"site {site!r} is not one of the exportable Llama sites "
                            "(layers.N.input_layernorm, .post_attention_layernorm, "
                            ".self_attn.o_proj, .mlp.down_proj, the final norm)")
        check_foldable(modules[site], tmap, site, needs_bias=False)
        if kind == "final_norm" and bool(torch.any(tmap.shift != 0)):
            raise FoldError(f"site {site!r} is the final norm and its map shifts (beta != 0): "
                            "the shift would need a bias on lm_head, which the config cannot "
                            "add; leave the final norm out of the sites")
        kinds[site] = kind
    return kinds


def _with_biases(model: Any, flags: set[str]) -> Any:
    """A copy of ``model``; with ``flags`` switched on in its config, zero biases added."""
    if all(getattr(model.config, flag, False) for flag in flags):
        return copy.deepcopy(model)
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    for flag in flags:
        setattr(config, flag, True)
    dtype = next(model.parameters()).dtype
    new = AutoModelForCausalLM.from_config(config).to(dtype)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    wrong = [k for k in missing if not k.endswith(".bias")] + list(unexpected)
    if wrong:
        raise FoldError(f"switching on {sorted(flags)} changed more than biases: {wrong[:3]}")
    params = dict(new.named_parameters())
    with torch.no_grad():
        for key in missing:
            params[key].zero_()
    return new.eval()


def fold_lm(model: Any, maps: Mapping[str, TransportMap], strength: float,
            support: str = "unbounded") -> Any:
    """A new model, of ``model``'s class, with ``maps`` folded in at ``strength``.

    The input model is not changed. Biases are switched on through the config where a shift
    needs them (Llama ``attention_bias``, ``mlp_bias``). Raises FoldError with the reason for
    anything that does not fold exactly.
    """
    kinds = _check(model, maps, support)
    flags = {_FLAG[kinds[s]] for s, t in maps.items()
             if kinds[s] != "final_norm" and bool(torch.any(t.shift != 0))}
    folded = _with_biases(model, flags)
    modules = dict(folded.named_modules())
    with torch.no_grad():
        for site, tmap in maps.items():
            module, kind = modules[site], kinds[site]
            is_norm = kind not in ("self_attn.o_proj", "mlp.down_proj")
            bias = None if is_norm else module.bias
            d_weight, d_bias = fold_deltas(tmap, module.weight, bias, strength)
            if d_weight is not None:
                module.weight.add_(d_weight.to(module.weight.dtype))
            if d_bias is None:
                continue
            if not is_norm:
                module.bias.add_(d_bias.to(module.bias.dtype))
                continue
            block = _SITE.match(site)["block"]
            for name in _CONSUMERS[kind]:  # y = W (x + c) + b = W x + (b + W c)
                linear = modules[f"{block}.{name}"]
                shift = linear.weight.to(torch.float64) @ d_bias
                linear.bias.add_(shift.to(linear.bias.dtype))
    log.info("folded %d maps at strength %g (biases switched on: %s)", len(maps), strength,
             sorted(flags) or "none")
    return folded


def export_checkpoint(model: Any, tokenizer: Any, maps: Mapping[str, TransportMap],
                      strength: float, out_dir: str | Path, support: str = "unbounded") -> Path:
    """Fold ``maps`` at ``strength`` and save a transformers checkpoint folder in ``out_dir``.

    The folder holds ``config.json``, ``model.safetensors``, the tokenizer files and
    :data:`EXPORT_INFO`. Returns the folder.
    """
    folded = fold_lm(model, maps, strength, support)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folded.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    meta = maps.metadata if isinstance(maps, MapSet) else {}
    info = {"strength": float(strength), "support": support, "sites": list(maps),
            "methods": sorted({t.method for t in maps.values()}), "maps_metadata": meta}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return out
