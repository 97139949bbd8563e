"""Tiny random-weight text encoders, built with ComfyUI's own CLIP classes (test helper).

A family's text encoder is what its ``comfy.supported_models`` config's ``clip_target()``
names (tokenizer and encoder classes, e.g. SDXL's CLIP-L + CLIP-G, SD3's L + G + T5-XXL,
Wan's UMT5-XXL, Qwen-Image's Qwen2.5-VL). It is built through ``comfy.sd.CLIP`` at toy widths
with ComfyUI's own override, ``model_options["<encoder>_model_config"]``, and its weights are
initialised with torch's initialisers. Tokenizers are ComfyUI's own (shipped with it); the
sentencepiece models ComfyUI reads from the checkpoint (UMT5's, mT5's, Gemma's) are stood in for
by the T5-pile one it ships. A vision tower that ComfyUI builds at full size whatever the
config (Qwen2.5-VL's, 658 M parameters) is left as ComfyUI allocates it, uninitialised: a text
prompt never runs it, and untouched memory costs no RAM. Mistral 3's tokenizer reads a tekken
vocabulary from the checkpoint: :func:`tekken_vocab` writes a tiny one (every byte, a few
merges, Mistral's control tokens), and ComfyUI converts it with transformers'
``MistralConverter(vocab=...)``, which only transformers < 5 accepts (:data:`TRANSFORMERS4`).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["ENCODERS", "MATRIX_PROMPT", "MATRIX_SOURCE", "MATRIX_TARGET", "NO_FINAL_NORM",
           "TOKEN_KEYS", "TRANSFORMERS4", "TRANSFORMERS4_DIR", "UNNAMED_OPTIONS", "build_clip",
           "init_weights", "needs_transformers4", "target", "tekken_vocab"]

# the text-encoder matrices' prompts (tests/test_text_encoders_matrix.py and
# tests/test_clip_loaders_matrix.py); quoted words: HunyuanImage's ByT5 encodes only a prompt's
# quoted text
MATRIX_SOURCE = ['a red circle, "sun"', 'a blue square, "moon"', 'a green triangle, "star"']
MATRIX_TARGET = ['a red circle, watercolor, "sun in watercolor"',
                 'a blue square, watercolor, "moon in watercolor"',
                 'a green triangle, watercolor, "star in watercolor"']
MATRIX_PROMPT = 'a yellow circle, "sky"'

CLIP = dict(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2,
            projection_dim=32)
T5 = dict(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
T5_4096 = dict(T5, d_model=4096)  # SD3 pads CLIP-L+G to T5-XXL's width 4096
BERT = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2)
LLM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
           num_key_value_heads=1)
# Mistral 3: ComfyUI reads the hidden states of layers 10, 20 and 30 (31 layers at least)
MISTRAL = dict(LLM, num_hidden_layers=31)
# LTX-2's Gemma 3 12B: its CLIP projects all 49 hidden states of width 3840 with a fixed
# Linear(3840 * 49, 3840) (722 M parameters), so the width and depth stay; heads, MLP and
# vocabulary are tiny (ComfyUI fixes head_dim at 256): 1.47 G parameters in all, of which the
# SigLIP vision tower (417 M) stays uninitialised and untouched, 4.4 GB RSS built in float32
GEMMA3_12B = dict(hidden_size=3840, num_hidden_layers=48, num_attention_heads=1,
                  num_key_value_heads=1, intermediate_size=16, vocab_size=32128)
TINY = {"clip": CLIP, "t5": T5, "t5_4096": T5_4096, "llm": LLM, "bert": BERT, "mistral": MISTRAL,
        "gemma3_12b": GEMMA3_12B}

# family config -> {encoder attribute: config kind}
ENCODERS: dict[str, dict[str, str]] = {
    "SD15": {"clip_l": "clip"},
    "SDXL": {"clip_l": "clip", "clip_g": "clip"},
    "SD3": {"clip_l": "clip", "clip_g": "clip", "t5xxl": "t5_4096"},
    "FluxSchnell": {"clip_l": "clip", "t5xxl": "t5"},
    "WAN21_T2V": {"umt5xxl": "t5"},
    "ZImage": {"qwen3_4b": "llm"},
    "HunyuanVideo": {"clip_l": "clip", "llama": "llm"},
    "Lumina2": {"gemma2_2b": "llm"},
    "HunyuanDiT": {"hydit_clip": "bert", "mt5xl": "t5"},  # Chinese BERT + mT5-XL
    "HunyuanImage21": {"qwen25_7b": "llm", "byt5_small": "t5"},  # Qwen2.5-VL + ByT5
    "Lumina2_gemma3_4b": {"gemma3_4b": "llm"},  # Gemma 3 (CLIPLoader, type lumina2)
    "Flux2": {"mistral3_24b": "mistral"},  # Mistral 3 Small 24B (its tokenizer: TRANSFORMERS4)
    "LTXAV": {"gemma3_12b": "gemma3_12b"},  # LTX-2: Gemma 3 12B + text projection (CLIPLoader)
    "MiniMaxH3": {"qwen3vl_32b": "llm"},  # Qwen3-VL 32B (layer 50's hidden state)
}

#: rows whose encoder has no final norm (the "final norm" preset finds nothing there)
NO_FINAL_NORM: dict[str, str] = {
    "MiniMaxH3": "Qwen3-VL 32B cut at layer 50: ComfyUI's config has final_norm False"}

#: rows whose tokenizer ComfyUI builds with ``MistralConverter(vocab=...)``: transformers < 5
TRANSFORMERS4 = frozenset({"Flux2"})
#: where scripts/setup_env.sh installs transformers 4.57.6 for them ($ACT_TRANSFORMERS4_DIR
#: overrides); a subprocess puts it first on PYTHONPATH
TRANSFORMERS4_DIR = Path(os.environ.get("ACT_TRANSFORMERS4_DIR") or Path(__file__).resolve()
                         .parent.parent / ".cache" / "transformers-4.57.6")

#: CLIPs no supported_models config names (CLIPLoader builds them from the file's weights):
#: row -> (tokenizer class, text-encoder factory, its keyword arguments), in comfy.text_encoders
TARGETS: dict[str, tuple[str, str, dict]] = {
    "Lumina2_gemma3_4b": ("lumina2.NTokenizer", "lumina2.te", {"model_type": "gemma3_4b"}),
    # what Flux2's clip_target() returns for a full (40-layer, not pruned) Mistral 3 file
    "Flux2": ("flux.Flux2Tokenizer", "flux.flux2_te", {}),
    # what CLIPLoader (type ltxv) builds for LTX-2's Gemma 3 12B file (single linear projection)
    "LTXAV": ("lt.LTXAVGemmaTokenizer", "lt.ltxav_te", {}),
}

#: tokenizer options ComfyUI reads from ``tokenizer_data``, per row: LTX-2's Gemma tokenizer
#: pads every prompt to 1024 tokens and the encoder then drops the padding; min_length 1 keeps
#: the matrix to the prompt's own tokens (each padding token would cost a 12B-wide pass)
TOKENIZER_DATA: dict[str, dict] = {"LTXAV": {"gemma3_12b_min_length": 1}}

# Mistral's control tokens, in tekken order (the pad token ComfyUI uses is id 11)
_MISTRAL_SPECIAL = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]",
                    "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]",
                    "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
                    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")

#: ComfyUI reads an encoder's config override from ``model_options["<model_name>_model_config"]``;
#: ByT5's model and LTX-2's Gemma (built outside an SD1ClipModel) set no name: the bare
#: ``_model_config``
_OPTION_NAMES = {"byt5_small": "", "gemma3_12b": ""}
UNNAMED_OPTIONS = frozenset(_OPTION_NAMES)

#: the tokenizer's key for an encoder, where it is not the encoder's own name
TOKEN_KEYS = {"byt5_small": "byt5", "clip_l": "l", "clip_g": "g"}

_VISION = ("visual", "vision_model")  # vision towers: text prompts never run them


def init_weights(module: nn.Module, seed: int) -> None:
    """ComfyUI builds layers uninitialised: torch's init for torch layers, norms' scales at 1
    and small random values for every other parameter (T5's relative position bias...).
    Vision towers are left alone (see the module docstring)."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        done = {id(p) for name, m in module.named_modules()
                if name.rsplit(".", 1)[-1] in _VISION for p in m.parameters()}
        for m in module.modules():
            if id(next(m.parameters(recurse=False), None)) in done:
                continue
            for base in (nn.Linear, nn.LayerNorm, nn.Embedding):
                if isinstance(m, base):
                    base.reset_parameters(m)
                    done.update(id(p) for p in m.parameters(recurse=False))
                    break
        for p in module.parameters():
            if id(p) not in done:
                p.fill_(1.0) if p.ndim <= 1 else p.normal_(std=0.02)


def tekken_vocab() -> bytes:
    """A tiny tekken vocabulary (JSON, the format of a Mistral 3 checkpoint's ``tekken_model``):
    the 256 bytes, a few merges and Mistral's control tokens."""
    tokens = [bytes([b]) for b in range(256)] + [b"th", b"the", b" a", b"re", b"ed", b"in"]
    special = len(_MISTRAL_SPECIAL)
    return json.dumps({
        "config": {"pattern": "", "default_vocab_size": special + len(tokens),
                   "default_num_special_tokens": special, "version": "v7"},
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode(), "token_str": None}
                  for r, t in enumerate(tokens)],
        "special_tokens": [{"rank": r, "token_str": s, "is_control": True}
                           for r, s in enumerate(_MISTRAL_SPECIAL)]}).encode()


def needs_transformers4(family: str) -> str | None:
    """Why ``family``'s CLIP cannot be built with the transformers imported here, or None."""
    import transformers

    if family in TRANSFORMERS4 and int(transformers.__version__.split(".")[0]) >= 5:
        return (f"ComfyUI's Mistral 3 tokenizer calls MistralConverter(vocab=...), which "
                f"transformers {transformers.__version__} refuses (missing vocab_file); "
                "tests/test_text_encoder_mistral3.py runs this row with transformers 4.57.6")
    return None


def target(family: str):
    """The family's ClipTarget: its supported_models config's clip_target(), which picks the
    encoders by the checkpoint keys it finds (given here as placeholders), or :data:`TARGETS`."""
    import comfy.supported_models
    import comfy.supported_models_base

    if family in TARGETS:
        tokenizer, factory, kwargs = TARGETS[family]

        def attribute(path: str):
            module, name = path.rsplit(".", 1)
            return getattr(importlib.import_module(f"comfy.text_encoders.{module}"), name)

        return comfy.supported_models_base.ClipTarget(attribute(tokenizer),
                                                      attribute(factory)(**kwargs))
    prefix = "text_encoders."
    detect = {f"{prefix}{name}.transformer.{key}": torch.zeros(1)
              for name in ENCODERS[family]
              for key in ("text_model.final_layer_norm.weight",
                          "encoder.final_layer_norm.weight")}
    return getattr(comfy.supported_models, family)({}).clip_target(detect)


def build_clip(family: str, seed: int = 0):
    """A ``comfy.sd.CLIP`` for the family's text encoder(s), tiny, on the CPU."""
    import comfy.sd

    target_ = target(family)
    options = {f"{_OPTION_NAMES.get(name, name)}_model_config": dict(TINY[kind])
               for name, kind in ENCODERS[family].items()}
    options.update(load_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                   initial_device=torch.device("cpu"), dtype=torch.float32)
    spiece = Path(comfy.sd.__file__).parent / "text_encoders/t5_pile_tokenizer/tokenizer.model"
    spiece = spiece.read_bytes()
    data = {"spiece_model": spiece, "mt5xl.spiece_model": spiece}
    if family in TRANSFORMERS4:
        data["tekken_model"] = tekken_vocab()
    data.update(TOKENIZER_DATA.get(family, {}))
    clip = comfy.sd.CLIP(target=target_, model_options=options, tokenizer_data=data)
    init_weights(clip.cond_stage_model, seed)
    return clip
