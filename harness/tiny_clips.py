"""Tiny random-weight instances of any ClipTarget ComfyUI's loaders choose (test helper).

:mod:`harness.clip_loaders` says which CLIP class ComfyUI builds for a loader, type and file;
:func:`build_tiny` builds that class through ``comfy.sd.CLIP`` at toy widths. Its encoders
are found by building the class once on the ``meta`` device (no memory); each encoder's
config kind follows from its transformer class (CLIP, T5, BERT-like, or a language model) and
is passed with ComfyUI's own override, ``model_options["<encoder>_model_config"]``. Language
models keep their real depth (several CLIPs read fixed hidden layers, e.g. layer 13 or 27)
at width 32; weights are initialised as in :mod:`harness.encoder_recipes`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness import encoder_recipes

__all__ = ["TRANSFORMER_KINDS", "build_tiny", "encoders_on_meta"]

#: transformer class name -> tiny config kind (harness.encoder_recipes.TINY), else "llm"
TRANSFORMER_KINDS = {"CLIPTextModel": "clip", "T5": "t5", "XLMRobertaModel": "xlmr",
                     "BertModel": "bert"}
#: transformer class -> depth of its tiny build: Qwen 3.5 (its CLIP reads layer -2; ComfyUI
#: derives the linear/full attention pattern from the depth) costs ~0.6 s per layer otherwise
_DEPTH = {"Qwen35_": 4}
#: encoders ComfyUI builds with no model name (they read the bare "_model_config")
_UNNAMED = encoder_recipes.UNNAMED_OPTIONS | {"gemma", "jina"}
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
    clip = comfy.sd.CLIP(target=clip_target, model_options=options, tokenizer_data=data)
    _check_tiny(clip.cond_stage_model)
    encoder_recipes.init_weights(clip.cond_stage_model, seed)
    return clip
