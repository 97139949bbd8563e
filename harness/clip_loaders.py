"""Every text encoder ComfyUI's CLIP loaders build, enumerated from ComfyUI itself (test helper).

``CLIPLoader`` and ``DualCLIPLoader`` offer a ``type`` (their input lists);
``TripleCLIPLoader`` and ``QuadrupleCLIPLoader`` offer none (SD3's and HiDream's full sets).
``comfy.sd.load_text_encoder_state_dicts`` then picks the CLIP class (and tokenizer) by that
type and by the encoder it detects in each file (``comfy.sd.detect_te_model``: CLIP-L/G/H,
T5-XXL / XL / old / base, ByT5, Gemma 2/3/4, Qwen 2.5/3/3-VL/3.5 of each size, Llama 3,
Mistral 3, GPT-OSS, Jina CLIP...). :func:`enumerate_targets` runs that function for every
loader, every type and every detectable encoder (pairs for the dual loader), with *stub*
state dicts that hold only the keys (and shapes) detection reads, and records the ClipTarget
ComfyUI chose, without building it (the CLIP constructor is swapped for a recorder during the
call; nothing is allocated). :func:`stub_state_dict` has one stub per ``TEModel`` member and
:func:`unstubbed_te_models` names members it lacks: a member ComfyUI adds later is noticed.

A target's *key* is its CLIP class and tokenizer (module and qualified name) plus the boolean
and string arguments ComfyUI's factory closed over (``sd3_clip(clip_l=..., t5=...)``,
``lumina2.te(model_type=...)``, ``flux2_te(pruned=...)``): two targets with one key build the
same modules.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import torch

__all__ = ["Target", "enumerate_targets", "loader_types", "stub_state_dict", "target_key",
           "target_of", "unstubbed_te_models"]


@dataclass(frozen=True)
class Target:
    """One way to load a CLIP: ``loader`` (single/dual/triple/quadruple), its ``type`` (None for
    triple and quadruple) and the detected encoder of each file (``TEModel`` names)."""

    loader: str
    type: str | None
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        """``single:wan:T5_XXL``, ``dual:flux:CLIP_L+T5_XXL``, ``triple:-:CLIP_L+CLIP_G+T5_XXL``"""
        return f"{self.loader}:{self.type or '-'}:{'+'.join(self.files)}"


def _e(*shape: int) -> torch.Tensor:
    """A tensor with the given leading dim and no elements (detection reads shape[0] only)."""
    return torch.empty(*shape, 0) if shape else torch.empty(0)


_LAYERS = "model.layers."
# TEModel -> the keys comfy.sd.detect_te_model reads (None: a shape-less marker)
_GEMMA_LAST = {"GEMMA_4_31B": 59, "GEMMA_4_12B": 47, "GEMMA_4_E4B": 41, "GEMMA_4_E2B": 34,
               "GEMMA_3_12B": 47, "GEMMA_3_4B": 0, "GEMMA_3_4B_VISION": 0}
_LLM_WIDTH = {"QWEN3_4B": 2560, "QWEN3_2B": 2048, "QWEN3_8B": 4096, "QWEN3_06B": 1024,
              "MISTRAL3_24B": 5120, "MISTRAL3_24B_PRUNED_FLUX2": 5120,
              "MINISTRAL_3_3B": 3072, "LLAMA3_8": 4096}
_QWEN35_WIDTH = {"QWEN35_08B": 1024, "QWEN35_2B": 2048, "QWEN35_4B": 2560, "QWEN35_9B": 4096,
                 "QWEN35_27B": 5120}


def stub_state_dict(te_model: str) -> dict[str, torch.Tensor]:
    """Keys (element-less tensors) that ``comfy.sd.detect_te_model`` reads as ``te_model``."""
    k: dict[str, torch.Tensor] = {}
    clip_layer = {"CLIP_G": 30, "CLIP_H": 22, "CLIP_L": 0}
    if te_model in clip_layer:
        k[f"text_model.encoder.layers.{clip_layer[te_model]}.mlp.fc1.weight"] = _e()
    elif te_model == "JINA_CLIP_2":
        k["model.encoder.layers.0.mixer.Wqkv.weight"] = _e()
    elif te_model in ("T5_XXL", "T5_XL"):
        k["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = _e(
            10240 if te_model == "T5_XXL" else 5120)
    elif te_model == "T5_XXL_OLD":
        k["encoder.block.23.layer.1.DenseReluDense.wi.weight"] = _e()
    elif te_model in ("BYT5_SMALL_GLYPH", "T5_BASE"):
        k["encoder.block.0.layer.0.SelfAttention.k.weight"] = _e(
            384 if te_model == "BYT5_SMALL_GLYPH" else 768)
    elif te_model == "T5_GEMMA":
        k["model.encoder.layers.0.pre_self_attn_layernorm.weight"] = _e()
    elif te_model.startswith("GEMMA"):
        k[_LAYERS + "0.post_feedforward_layernorm.weight"] = _e()
        if te_model in _GEMMA_LAST:
            k[_LAYERS + f"{_GEMMA_LAST[te_model]}.self_attn.q_norm.weight"] = _e()
        if te_model == "GEMMA_3_12B":
            k[_LAYERS + "5.self_attn.v_proj.weight"] = _e()
        if te_model == "GEMMA_3_4B_VISION":
            k["vision_model.embeddings.patch_embedding.weight"] = _e()
    elif te_model == "GPT_OSS_20B":
        k["layers.0.self_attn.sinks"] = _e()
        k["layers.0.mlp.experts.gate_up_proj.weight"] = _e()
    elif te_model in ("QWEN25_3B", "QWEN25_7B"):
        k[_LAYERS + "0.self_attn.k_proj.bias"] = _e(256 if te_model == "QWEN25_3B" else 512)
    elif te_model in _QWEN35_WIDTH:
        k["model.language_model.layers.0.linear_attn.A_log"] = _e()
        k["model.language_model.layers.0.input_layernorm.weight"] = _e(_QWEN35_WIDTH[te_model])
    elif te_model in ("QWEN3VL_4B", "QWEN3VL_8B"):
        k["model.visual.deepstack_merger_list.0.norm.weight"] = _e()
        k["model.visual.merger.linear_fc2.weight"] = _e(2560 if te_model.endswith("4B") else 4096)
    elif te_model == "QWEN3VL_32B":
        k["visual.deepstack_merger_list.0.norm.weight"] = _e()
        k[_LAYERS + "49.self_attn.q_proj.weight"] = _e()
    elif te_model in _LLM_WIDTH:
        k[_LAYERS + "0.post_attention_layernorm.weight"] = _e(_LLM_WIDTH[te_model])
        if te_model.startswith("QWEN3_"):
            k[_LAYERS + "0.self_attn.q_norm.weight"] = _e()
        if te_model == "MISTRAL3_24B":
            k[_LAYERS + "39.post_attention_layernorm.weight"] = _e()
    return k


def unstubbed_te_models() -> list[str]:
    """``TEModel`` members that :func:`stub_state_dict` does not make ComfyUI detect."""
    import comfy.sd

    return [m.name for m in comfy.sd.TEModel
            if comfy.sd.detect_te_model(stub_state_dict(m.name)) != m]


def loader_types() -> dict[str, list[str | None]]:
    """The ``type`` options of each CLIP loader node, read from the nodes' input lists."""
    import nodes

    types = {"single": list(nodes.CLIPLoader.INPUT_TYPES()["required"]["type"][0]),
             "dual": list(nodes.DualCLIPLoader.INPUT_TYPES()["required"]["type"][0]),
             "triple": [None], "quadruple": [None]}
    return types


class _Chosen(Exception):  # noqa: N818 (carries the ClipTarget out of ComfyUI's loader)
    pass


@contextlib.contextmanager
def _recording():
    """comfy.sd.CLIP swapped for a recorder that raises the target (restored in finally)."""
    import comfy.sd

    original = comfy.sd.CLIP

    def record(target=None, **_kwargs):
        raise _Chosen(target)

    comfy.sd.CLIP = record
    try:
        yield
    finally:
        comfy.sd.CLIP = original


def _clip_type(name: str | None):
    import comfy.sd

    # the loaders' own lookup: getattr(CLIPType, type.upper(), STABLE_DIFFUSION)
    default = comfy.sd.CLIPType.STABLE_DIFFUSION
    return default if name is None else getattr(comfy.sd.CLIPType, name.upper(), default)


def target_of(target: Target):
    """The ClipTarget (``.clip``, ``.tokenizer``) ComfyUI chooses for ``target``, and the
    tokenizer data it read from the files (e.g. ``spiece_model`` keys)."""
    import comfy.sd

    with _recording():
        try:
            comfy.sd.load_text_encoder_state_dicts(
                [stub_state_dict(f) for f in target.files], clip_type=_clip_type(target.type))
        except _Chosen as chosen:
            return chosen.args[0]
    raise RuntimeError(f"ComfyUI built no CLIP for {target.name}")


def target_key(clip_target) -> tuple[str, str, tuple]:
    """(CLIP class, tokenizer class, the factory's bool/str arguments) of a ClipTarget."""
    cls, tok = clip_target.clip, clip_target.tokenizer
    init = cls.__dict__.get("__init__")
    closed: dict = {}
    if init is not None and init.__closure__:
        closed = {n: c.cell_contents for n, c in zip(init.__code__.co_freevars,
                                                        init.__closure__, strict=True)}
    closed = tuple(sorted((k, v) for k, v in closed.items() if isinstance(v, (bool, str))))
    return (f"{cls.__module__}:{cls.__qualname__}", f"{tok.__module__}:{tok.__qualname__}",
            closed)


def enumerate_targets() -> dict[tuple, list[Target]]:
    """Every key ComfyUI's loaders reach -> the loader/type/encoder choices that reach it:
    the single loader with every type and every ``TEModel``; the dual loader with every type
    and every unordered pair; the triple and quadruple loaders with SD3's and HiDream's sets."""
    import comfy.sd

    members = [m.name for m in comfy.sd.TEModel]
    types = loader_types()
    choices = [Target("single", t, (m,)) for t in types["single"] for m in members]
    choices += [Target("dual", t, pair) for t in types["dual"]
                for pair in itertools.combinations_with_replacement(members, 2)]
    choices.append(Target("triple", None, ("CLIP_L", "CLIP_G", "T5_XXL")))
    choices.append(Target("quadruple", None, ("CLIP_L", "CLIP_G", "T5_XXL", "LLAMA3_8")))
    found: dict[tuple, list[Target]] = {}
    for choice in choices:
        found.setdefault(target_key(target_of(choice)), []).append(choice)
    return found
