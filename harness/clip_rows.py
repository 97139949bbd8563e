"""The text-encoder matrix's rows, derived from what ComfyUI's CLIP loaders build (test helper).

:func:`harness.clip_loaders.enumerate_targets` gives every CLIP class (key) the loaders reach.
Each key is either built by a named row of :mod:`harness.encoder_recipes` (a family's CLIP,
tuned by hand: real widths where ComfyUI needs them), or gets a generated row here (built by
:mod:`harness.tiny_clips`), or is excluded with a reason (:data:`EXCLUDED_CLASSES`,
:data:`GAPS`, or no encoder at all). :data:`TYPE_FAMILIES` says which image or video family each
loader ``type`` serves; :data:`EXCLUDED_TYPES` lists the audio ones.
"""

from __future__ import annotations

from harness import clip_loaders, encoder_recipes

__all__ = ["EXCLUDED_CLASSES", "EXCLUDED_TYPES", "GAPS", "TRANSFORMERS4_TOKENIZERS",
           "TYPE_FAMILIES", "named_row_keys", "rows"]

#: loader type -> the comfy.supported_models entries (docs/families.md) it serves
TYPE_FAMILIES: dict[str, str] = {
    "stable_diffusion": "SD15, SD20, SD21Unclip*, Stable_Zero123, SVD (CLIP-L / CLIP-H)",
    "stable_cascade": "Stable_Cascade_C, Stable_Cascade_B (CLIP-G)",
    "sd3": "SD3 (any of CLIP-L, CLIP-G, T5-XXL)",
    "mochi": "GenmoMochi (T5-XXL)",
    "ltxv": "LTXV (T5-XXL); LTXAV (Gemma 3 12B + projection, dual)",
    "pixart": "PixArtAlpha, PixArtSigma (T5-XXL)",
    "cosmos": "CosmosT2V, CosmosI2V (old T5-XXL)",
    "lumina2": "Lumina2 (Gemma 2 2B, Gemma 3 4B)",
    "wan": "WAN21_*, WAN22_* (UMT5-XXL)",
    "hidream": "HiDream (CLIP-L, CLIP-G, T5-XXL, Llama 3.1 8B)",
    "chroma": "Chroma, ChromaRadiance (T5-XXL)",
    "omnigen2": "Omnigen2 (Qwen2.5-VL 3B)",
    "qwen_image": "QwenImage (Qwen2.5-VL 7B)",
    "hunyuan_image": "HunyuanImage21 (Qwen2.5-VL 7B, ByT5)",
    "flux2": "Flux2 (Mistral 3 24B; Klein: Qwen3 4B / 8B)",
    "ovis": "QwenImage (Ovis-Image: Ovis 2.5 2B's Qwen3)",
    "longcat_image": "LongCatImage (Qwen2.5-VL 7B)",
    "cogvideox": "CogVideoX_* (T5-XXL, 226-token padding)",
    "lens": "Lens (GPT-OSS 20B)",
    "pixeldit": "PixelDiTT2I (Gemma 2 2B)",
    "ideogram4": "Ideogram4 (Qwen3 8B or Qwen3-VL 8B)",
    "boogu": "Boogu (Qwen3-VL 8B)",
    "krea2": "Krea2 (Qwen3-VL 4B)",
    "joyimage": "JoyImage (Qwen3-VL 8B)",
    "mage": "MageFlow (Qwen3-VL 4B)",
    "minimax": "MiniMaxH3 (Qwen3-VL 32B cut at layer 50)",
    "sdxl": "SDXL, SSD1B, KOALA_*, Segmind_Vega (CLIP-L + CLIP-G)",
    "flux": "Flux, FluxSchnell, FluxInpaint (CLIP-L + T5-XXL)",
    "hunyuan_video": "HunyuanVideo* (CLIP-L + Llama 3 8B)",
    "hunyuan_video_15": "HunyuanVideo15* (Qwen2.5-VL 7B + ByT5)",
    "kandinsky5": "Kandinsky5 (Qwen2.5-VL 7B + CLIP-L)",
    "kandinsky5_image": "Kandinsky5Image (Qwen2.5-VL 7B + CLIP-L)",
    "newbie": "Lumina2 (NewBie: Gemma 3 4B + Jina CLIP v2)",
}

#: loader types that serve no image or video family
EXCLUDED_TYPES: dict[str, str] = {
    "stable_audio": "audio: Stable Audio's T5-base",
    "ace": "audio: ACE-Step's T5-base / Qwen3 LM",
}

#: CLIP classes only audio families load (reached by any type: ComfyUI then ignores the type)
EXCLUDED_CLASSES: dict[str, str] = {
    "comfy.text_encoders.sa_t5:SAT5Model": "audio: Stable Audio's T5-base",
    "comfy.text_encoders.ace:AceT5Model": "audio: ACE-Step's UMT5-base",
    "comfy.text_encoders.ace15:te.<locals>.ACE15TEModel_": "audio: ACE-Step 1.5's Qwen3 LM",
    "comfy.text_encoders.sa3:SAT5GemmaModel": "audio: Stable Audio 3's T5Gemma",
}

#: CLIP classes the matrix cannot run today, with the measured reason (the matrix checks that
#: each still fails that way, so a fix is noticed)
GAPS: dict[str, tuple[str, str]] = {
    "comfy.text_encoders.lumina2:te.<locals>.LuminaTEModel_|gemma3_4b_vision": (
        "KeyError", "ComfyUI 0.30 itself cannot encode with it: NTokenizer keys the tokens "
        "'gemma3_4b', the encoder is named 'gemma3_4b_vision' (KeyError in "
        "SD1ClipModel.encode_token_weights)"),
    "comfy.text_encoders.gemma4:gemma4_te.<locals>.Gemma4TEModel_": (
        "Error", "Gemma 4 (no image or video family of comfy.supported_models uses it): the "
        "generic tiny config leaves its per-layer input embeddings (vocabulary 262144 x layers "
        "x 256) at full size, 2.7-3.1 G parameters for E2B/E4B, and the 12B variant fails to "
        "build ('not enough values to unpack'); no tiny recipe yet"),
}

#: tokenizers ComfyUI builds with MistralConverter(vocab=...): transformers < 5 (subprocess)
TRANSFORMERS4_TOKENIZERS = frozenset({"comfy.text_encoders.flux:Flux2Tokenizer",
                                      "comfy.text_encoders.ernie:ErnieTokenizer"})


def gap_of(key: tuple) -> tuple[str, str] | None:
    """The :data:`GAPS` entry of a key (by class, or class and a closed-over argument)."""
    for name, gap in GAPS.items():
        cls, _, arg = name.partition("|")
        if key[0] == cls and (not arg or arg in {str(v) for _, v in key[2]}):
            return gap
    return None


def named_row_keys() -> dict[tuple, str]:
    """Key -> named row of encoder_recipes.ENCODERS that builds that class."""
    return {clip_loaders.target_key(encoder_recipes.target(family)): family
            for family in encoder_recipes.ENCODERS}


def _empty(key: tuple) -> bool:
    """True where the factory got every encoder flag False (files of none it uses)."""
    flags = [v for n, v in key[2] if n in ("clip_l", "clip_g", "t5", "llama")]
    return bool(flags) and not any(flags)


def rows() -> dict[str, dict]:
    """Every key the loaders reach -> how the matrix covers it: ``{"row": name, "how":
    "named" | "generated" | "gap" | "excluded", "reason": str, "targets": [...]}``, keyed by
    the representative target's name (``dual:flux:any`` where every pair of files gives it).
    """
    import comfy.sd

    named = named_row_keys()
    pairs = len(comfy.sd.TEModel) * (len(comfy.sd.TEModel) + 1) // 2
    out = {}
    for key, targets in clip_loaders.enumerate_targets().items():
        # label: a target whose type names the class's module (cosmos, wan...), else the first
        module = key[0].split(":")[0].rsplit(".", 1)[-1].replace("_", "")
        first = next((t for t in targets if t.type and (
            module.startswith(t.type.replace("_", "")) or
            t.type.replace("_", "").startswith(module))), targets[0])
        entry = {"key": key, "target": first, "targets": targets, "reason": ""}
        name = first.name
        if first.loader == "dual" and sum(t.loader == "dual" and t.type == first.type
                                          for t in targets) == pairs:
            name = f"dual:{first.type}:any"  # ComfyUI goes by the type alone
        if key in named:
            entry.update(how="named", row=named[key])
        elif key[0] in EXCLUDED_CLASSES:
            entry.update(how="excluded", reason=EXCLUDED_CLASSES[key[0]])
        elif _empty(key):
            entry.update(how="excluded", reason="no encoder: none of the files is one this "
                         "type uses (ComfyUI builds an empty CLIP)")
        elif gap_of(key):
            entry.update(how="gap", reason=gap_of(key)[1])
        else:
            entry.update(how="generated", row=name)
        entry["name"] = name
        out[name] = entry
    return out
