"""ActExportLoRA: transport maps as a LoRA file that ComfyUI's stock LoRA loaders read.

A foldable map (unbounded support, one timestep range, each site the output of a layer with
affine weights: see :mod:`act_core.fold`) changes the weights by ``lambda * diff`` with ``diff``
fixed. The file holds ``diff`` at strength 1 under the generic key names ComfyUI's ``comfy/lora.py``
maps onto the diffusion model's state dict:

* ``diffusion_model.<site>.diff``: the weight difference (shape of the weight);
* ``diffusion_model.<site>.diff_b``: the bias difference (D,).

LoraLoaderModelOnly at strength ``s`` adds ``s * diff``: the same weights as AcT Apply Transport in
mode 'folded' at ``lambda = s`` with apply_to 'both'. Key names for other loaders: docs/export.md.
"""

from __future__ import annotations

import json
import logging
import os

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import IO
from safetensors.torch import save_file
from torch import nn

from ..act_core import MapSet
from ..act_core._version import __version__
from ..act_core.errors import MapCompatibilityError
from ..act_core.support import FROM_MAPS, resolve_support
from .apply import validate_maps_for_model
from .common import family_of
from .files import next_path
from .fold import PREFIX, weight_diffs

__all__ = ["KEY_FORMATS", "ActExportLoRA", "lora_state_dict"]

log = logging.getLogger(__name__)
FOLDER = "loras"
WHAT = "AcT Export LoRA"
#: "comfyui": ``diffusion_model.<site>.diff`` / ``.diff_b``; "kohya": ``lora_unet_<diffusers name>``
#: with ``.diff`` + ``.diff_b`` (linear, conv) or ``.w_norm`` + ``.b_norm`` (norms), both entries
#: always present (zeros where nothing changes), as A1111/Forge's Lora extension requires.
KEY_FORMATS = ("comfyui", "kohya")


def _kohya_names(model) -> dict[str, str]:
    """``{comfy site: "lora_unet_<diffusers path with _>"}`` for a UNet (SD1.x/2.x/XL)."""
    mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    if not mapping:
        raise ValueError(f"{WHAT}: key format 'kohya' names UNet (SD1.x/SD2/SDXL) modules only; "
                         f"this is a {family_of(model)} model: use key format 'comfyui'")
    return {comfy[: -len(".weight")]: "lora_unet_" + name[: -len(".weight")].replace(".", "_")
            for name, comfy in mapping.items() if name.endswith(".weight")}


def _kohya(model, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``diffusion_model.<site>.diff/diff_b`` to kohya names, pairs completed with zeros."""
    names = _kohya_names(model)
    diffusion_model = model.get_model_object("diffusion_model")
    out = {}
    for site in sorted({k[len(PREFIX):].rpartition(".")[0] for k in tensors}):
        if site not in names:
            raise ValueError(f"{WHAT}: site {site!r} has no kohya (diffusers) name; use key "
                             "format 'comfyui'")
        module = diffusion_model.get_submodule(site)
        norm = isinstance(module, (nn.GroupNorm, nn.LayerNorm))
        weight = tensors.get(f"{PREFIX}{site}.diff")
        bias = tensors.get(f"{PREFIX}{site}.diff_b")
        if weight is None:
            weight = torch.zeros(module.weight.shape, dtype=torch.float32)
        if bias is None:
            bias = torch.zeros(module.weight.shape[0], dtype=torch.float32)
        w_key, b_key = ("w_norm", "b_norm") if norm else ("diff", "diff_b")
        out[f"{names[site]}.{w_key}"], out[f"{names[site]}.{b_key}"] = weight, bias
    return out


def lora_state_dict(model, maps: MapSet, support: str = "unbounded",
                    key_format: str = "comfyui") -> tuple[dict, dict[str, str]]:
    """``({key: tensor}, metadata)`` of the LoRA file for ``maps`` on ``model`` (strength 1).

    Keys ``diffusion_model.<site>.diff`` (weight) and ``.diff_b`` (bias), float32, contiguous,
    or kohya names (:data:`KEY_FORMATS`). Raises ValueError with the reason when the maps
    cannot be folded exactly.
    """
    if key_format not in KEY_FORMATS:
        raise ValueError(f"{WHAT}: key_format must be one of {KEY_FORMATS}, got {key_format!r}")
    diffs = weight_diffs(model, maps, 1.0, support=support, what=WHAT)
    tensors = {}
    for key, diff in diffs.items():
        base, _, name = key.rpartition(".")
        tensors[f"{base}.{'diff' if name == 'weight' else 'diff_b'}"] = diff.contiguous()
    if key_format == "kohya":
        tensors = _kohya(model, tensors)
    meta = maps.metadata
    metadata = {
        "act_version": __version__,
        "act_family": family_of(model),
        "act_sites": json.dumps(sorted({k[len(PREFIX):].rpartition(".")[0] for k in diffs})),
        "act_methods": json.dumps(sorted({t.method for t in maps.values()})),
        "act_concept": str(meta.get("concept") or ""),
        "act_note": ("AcT transport maps folded into weight differences: a LoRA loader at "
                     "strength s gives lambda = s, on both CFG halves"),
    }
    return tensors, metadata


class ActExportLoRA(IO.ComfyNode):
    """Write maps as a LoRA (weight differences) into models/loras."""

    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActExportLoRA",
            display_name="AcT Export LoRA",
            category="AcT",
            description=("Folds transport maps into weight differences and saves them in "
                         "models/loras as an ordinary LoRA file: the stock LoraLoaderModelOnly at "
                         "strength s then gives what AcT Apply Transport (mode folded, apply_to "
                         "both) gives at strength s, with no AcT node needed. Only maps that fold "
                         "exactly can be exported (unbounded support, one timestep range, sites "
                         "on norm or linear layers, pure shifts on GroupNorms); others are "
                         "refused with the reason."),
            search_aliases=["act to lora", "export lora", "bake maps", "fold maps"],
            is_output_node=True,
            inputs=[
                IO.Model.Input("model", tooltip="The model the maps were learned on (its "
                                                "weights are read, never changed)."),
                IO.Custom("ACT_MAPS").Input("maps", tooltip="The maps to export."),
                IO.String.Input("filename_prefix", default="act/act_lora",
                                tooltip="File name inside models/loras; a counter and "
                                        ".safetensors are appended."),
                IO.Combo.Input("support", options=[FROM_MAPS, "unbounded"],
                               default=FROM_MAPS, optional=True, advanced=True,
                               tooltip="A LoRA acts on every value: only the unbounded support "
                                       "folds. 'from maps' refuses maps learned with a bounded "
                                       "support; 'unbounded' exports them as if unbounded (the "
                                       "same as AcT Apply Transport with support unbounded)."),
                IO.Combo.Input("key_format", options=list(KEY_FORMATS), default="comfyui",
                               optional=True, advanced=True,
                               tooltip="comfyui: diffusion_model.<module>.diff/diff_b, read by "
                                       "ComfyUI's loaders on every model. kohya: lora_unet_<"
                                       "diffusers name> with diff/diff_b and w_norm/b_norm, "
                                       "also read by A1111/Forge (SD1.x/SDXL UNets only)."),
            ],
            outputs=[IO.String.Output(display_name="lora_name",
                                      tooltip="The file's name as LoRA loaders list it.")],
        )

    @classmethod
    def execute(cls, model, maps: MapSet, filename_prefix: str, support: str = FROM_MAPS,
                key_format: str = "comfyui") -> IO.NodeOutput:
        try:
            validate_maps_for_model(model, maps)
        except MapCompatibilityError as error:
            raise ValueError(f"{WHAT}: {error}") from error
        support = resolve_support(support, [maps.support])
        tensors, metadata = lora_state_dict(model, maps, support, key_format)
        path = next_path(filename_prefix, FOLDER)
        save_file(tensors, path, metadata=metadata)
        name = os.path.relpath(path, folder_paths.get_folder_paths(FOLDER)[0])
        log.info("%s: wrote %s (%d tensors)", WHAT, name, len(tensors))
        return IO.NodeOutput(name, ui={"text": [f"saved models/loras/{name}"]})
