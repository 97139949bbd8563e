"""Tiny random-weight text encoders, built with ComfyUI's own CLIP classes (test helper).

A family's text encoder is what its ``comfy.supported_models`` config's ``clip_target()``
names (tokenizer and encoder classes, e.g. SDXL's CLIP-L + CLIP-G, SD3's L + G + T5-XXL,
Wan's UMT5-XXL, Qwen-Image's Qwen2.5-VL). It is built through ``comfy.sd.CLIP`` at toy widths
with ComfyUI's own override, ``model_options["<encoder>_model_config"]``, and its weights are
initialised with torch's initialisers. Tokenizers are ComfyUI's own (shipped with it); UMT5's
sentencepiece model, which ComfyUI reads from the checkpoint, is the T5-pile one it ships.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["ENCODERS", "build_clip"]

CLIP = dict(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2,
            projection_dim=32)
T5 = dict(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
T5_4096 = dict(T5, d_model=4096)  # SD3 pads CLIP-L+G to T5-XXL's width 4096
LLM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
           num_key_value_heads=1)
TINY = {"clip": CLIP, "t5": T5, "t5_4096": T5_4096, "llm": LLM}

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
}


def _init_weights(module: nn.Module, seed: int) -> None:
    """ComfyUI builds layers uninitialised: torch's init for torch layers, norms' scales at 1
    and small random values for every other parameter (T5's relative position bias...)."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        done = set()
        for m in module.modules():
            for base in (nn.Linear, nn.LayerNorm, nn.Embedding):
                if isinstance(m, base):
                    base.reset_parameters(m)
                    done.update(id(p) for p in m.parameters(recurse=False))
                    break
        for p in module.parameters():
            if id(p) not in done:
                p.fill_(1.0) if p.ndim <= 1 else p.normal_(std=0.02)


def build_clip(family: str, seed: int = 0):
    """A ``comfy.sd.CLIP`` for the family's text encoder(s), tiny, on the CPU."""
    import comfy.sd
    import comfy.supported_models

    config_class = getattr(comfy.supported_models, family)
    prefix = "text_encoders."  # the checkpoint keys clip_target detects encoders by
    detect = {f"{prefix}{name}.transformer.{key}": torch.zeros(1)
              for name in ENCODERS[family]
              for key in ("text_model.final_layer_norm.weight",
                          "encoder.final_layer_norm.weight")}
    target = config_class({}).clip_target(detect)
    options = {f"{name}_model_config": dict(TINY[kind])
               for name, kind in ENCODERS[family].items()}
    options.update(load_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                   initial_device=torch.device("cpu"), dtype=torch.float32)
    spiece = Path(comfy.sd.__file__).parent / "text_encoders/t5_pile_tokenizer/tokenizer.model"
    clip = comfy.sd.CLIP(target=target, tokenizer_data={"spiece_model": spiece.read_bytes()},
                         model_options=options)
    _init_weights(clip.cond_stage_model, seed)
    return clip
