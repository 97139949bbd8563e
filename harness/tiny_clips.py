"""Tiny random-weight instances of any ClipTarget ComfyUI's loaders choose (test helper).

:mod:`harness.clip_loaders` says which CLIP class ComfyUI builds for a loader, type and file;
:func:`build_tiny` builds that class through ``comfy.sd.CLIP`` at toy widths. Its encoders
are found by building the class once on the ``meta`` device (no memory); each encoder's
config kind follows from its transformer class (CLIP, T5, BERT-like, or a language model) and
is passed with ComfyUI's own override, ``model_options["<encoder>_model_config"]``. Language
models keep their real depth (several CLIPs read fixed hidden layers, e.g. layer 13 or 27)
at width 32; weights are initialised as in :mod:`harness.encoder_recipes`.

Some encoders read their own option and build their linear layers without weights until a
state dict fills them (:data:`OWN_CONFIG`: Lens's GPT-OSS, whose ``comfy.ops.
mixed_precision_ops`` Linear has no ``weight`` and MoEExperts ``weight = None`` until
loaded, hence the generic build's "'Linear' object has no attribute 'weight'"):
:func:`weightless_state_dict` gives those layers zero weights of their tiny shapes, loaded by
``comfy.sd.CLIP(state_dict=...)`` as a checkpoint would be, then initialised as the rest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness import encoder_recipes

__all__ = ["OWN_CONFIG", "TRANSFORMER_KINDS", "build_tiny", "encoders_on_meta",
           "weightless_state_dict"]

#: transformer class name -> tiny config kind (harness.encoder_recipes.TINY), else "llm"
TRANSFORMER_KINDS = {"CLIPTextModel": "clip", "T5": "t5", "XLMRobertaModel": "xlmr",
                     "BertModel": "bert"}
#: transformer class -> depth of its tiny build: Qwen 3.5 (its CLIP reads layer -2; ComfyUI
#: derives the linear/full attention pattern from the depth) costs ~0.6 s per layer otherwise
_DEPTH = {"Qwen35_": 4}
#: encoders ComfyUI builds with no model name (they read the bare "_model_config")
_UNNAMED = encoder_recipes.UNNAMED_OPTIONS | {"gemma", "jina"}
#: transformer class -> (the model option its CLIP class reads, tiny config): GPT-OSS (Lens)
#: ignores "<encoder>_model_config"; its depth stays 24 (Lens reads layers 5, 11, 17, 23) and
#: its vocabulary 201088 (Lens pads with token 199999)
OWN_CONFIG = {"GptOssModel": ("gpt_oss_config", dict(
    hidden_size=32, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, num_local_experts=4, num_experts_per_tok=2))}
_XLMR = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2)


def encoders_on_meta(clip_target) -> dict[str, tuple[str, int | None]]:
    """{encoder attribute: (transformer class name, its number of layers)} of the CLIP class,
    built on the meta device (nothing allocated)."""
    model = clip_target.clip(device="meta", dtype=torch.float32, model_options={})
    return {name: (type(getattr(child, "transformer", child)).__name__,
                   getattr(child, "num_layers", None))
            for name, child in model.named_children()
            if next(child.parameters(), None) is not None}


#: CLIP modules that concatenate CLIP outputs with T5's along the tokens, padded to T5-XXL's
#: width 4096 (SD3): their T5 keeps that width
_WIDE_T5 = ("comfy.text_encoders.sd3_clip",)


def _tiny_config(transformer: str, layers: int | None, wide_t5: bool = False) -> dict:
    kind = TRANSFORMER_KINDS.get(transformer, "llm")
    kind = "t5_4096" if kind == "t5" and wide_t5 else kind
    if kind == "xlmr":
        return dict(_XLMR)
    config = dict(encoder_recipes.TINY[kind])
    if kind == "llm" and layers:
        # keep the depth (fixed hidden-layer taps), except where the CLIP reads layer -2
        config["num_hidden_layers"] = min(layers, _DEPTH.get(transformer, layers))
    return config


def _check_tiny(model: torch.nn.Module, limit: int = 200_000_000) -> None:
    """Refuse an encoder that took no tiny config (initialising it would touch GBs)."""
    for name, child in model.named_children():
        count = sum(p.numel() for n, p in child.named_parameters()
                    if not any(v in n.split(".") for v in ("visual", "vision_model")))
        if count > limit:
            raise ValueError(f"encoder {name!r} of {type(model).__name__} has {count:,} "
                             f"parameters outside its vision tower, expected a tiny build "
                             f"(< {limit:,}): ComfyUI did not read the tiny config; add its "
                             "option name to harness.tiny_clips")


def build_tiny(clip_target, seed: int = 0, tokenizer_data: dict | None = None):
    """A tiny ``comfy.sd.CLIP`` of ``clip_target``'s class, on the CPU, in float32."""
    import comfy.sd

    options = {}
    wide = clip_target.clip.__module__ in _WIDE_T5
    encoders = encoders_on_meta(clip_target)
    for name, (transformer, layers) in encoders.items():
        if transformer in OWN_CONFIG:
            option, config = OWN_CONFIG[transformer]
            options[option] = dict(config)
            continue
        config = _tiny_config(transformer, layers, wide)
        options[f"{name}_model_config"] = config
        # encoders ComfyUI builds without a model name read the bare "_model_config"
        # (NewBie's Gemma and Jina CLIP both do: the sizes both configs have, first wins;
        # head counts stay each model's own, which keeps Gemma's grouped-query ratio)
        if len(encoders) == 1 or name in _UNNAMED:
            shared = options.get("_model_config")
            options["_model_config"] = config if shared is None else {
                k: v for k, v in shared.items() if k in config and "heads" not in k}
    options.update(load_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                   initial_device=torch.device("cpu"), dtype=torch.float32)
    spiece = (Path(comfy.sd.__file__).parent / "text_encoders/t5_pile_tokenizer/"
              "tokenizer.model").read_bytes()
    data = {key: spiece for key in ("spiece_model", "mt5xl.spiece_model",
                                    "gemma_spiece_model", "jina_spiece_model")}
    # Gemma 4's and GPT-OSS's tokenizer.json (read from the checkpoint): Llama 3's stands in;
    # Mistral's tekken vocabulary: encoder_recipes.tekken_vocab; LTX-2's Gemma: no padding
    data["tokenizer_json"] = (Path(comfy.sd.__file__).parent / "text_encoders/llama_tokenizer/"
                              "tokenizer.json").read_bytes()
    data["tekken_model"] = encoder_recipes.tekken_vocab()
    data["gemma3_12b_min_length"] = 1
    data.update(tokenizer_data or {})
    state = weightless_state_dict(clip_target, options)
    clip = comfy.sd.CLIP(target=clip_target, model_options=options, tokenizer_data=data,
                         state_dict=[state] if state else [])
    _check_tiny(clip.cond_stage_model)
    encoder_recipes.init_weights(clip.cond_stage_model, seed)
    return clip


def weightless_state_dict(clip_target, options: dict) -> dict[str, torch.Tensor]:
    """A zero checkpoint of the encoder whose layers the CLIP class builds without weights (no
    ``weight``, or None; shape ``_orig_shape``: [out, in], or [experts, out, in] for
    MoEExperts): every key its ``load_sd`` reads (relative to its ``transformer``), weights
    of those layers included; {} when no layer lacks one. The class is built on the meta
    device with ``options`` (nothing allocated)."""
    model = clip_target.clip(device="meta", dtype=torch.float32, model_options=options)
    weightless = {name: module for name, module in model.named_modules()
                  if getattr(module, "weight", None) is None and hasattr(module, "_orig_shape")}
    encoders = {name.split(".", 1)[0] for name in weightless}
    if not weightless:
        return {}
    if len(encoders) > 1 or not all(n.startswith(f"{min(encoders)}.transformer.")
                                    for n in weightless):
        raise ValueError(f"weight-less layers of {type(model).__name__} in {sorted(encoders)}, "
                         "expected them in one encoder's transformer (its load_sd reads one "
                         "checkpoint): extend harness.tiny_clips")
    transformer = getattr(model, min(encoders)).transformer
    # its parameters (state_dict() would skip the weight-less layers' biases)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in transformer.named_parameters()}
    prefix = f"{min(encoders)}.transformer."
    state.update({name.removeprefix(prefix) + ".weight": torch.zeros(module._orig_shape)
                  for name, module in weightless.items()})
    return state
