"""ActSaveMaps / ActLoadMaps: map files in ComfyUI's ``models/act_maps`` folder.

The files are act_core map files (safetensors with one JSON metadata string; never pickle),
the same format the ``act`` command line and the transformers/diffusers integrations use.
"""

from __future__ import annotations

import os
import re

import folder_paths
from comfy_api.latest import IO

from ..act_core import MapSet, load_maps, save_maps
from ..act_core.errors import MapFileError

__all__ = ["FOLDER", "ActLoadMaps", "ActSaveMaps", "next_path", "register_folder"]

FOLDER = "act_maps"


def register_folder() -> None:
    """Register ``models/act_maps`` (safetensors only) with ComfyUI's folder_paths."""
    path = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([path], {".safetensors"})
    os.makedirs(path, exist_ok=True)


def next_path(prefix: str, folder_name: str = FOLDER) -> str:
    """A new ``<prefix>_<counter>.safetensors`` path inside ComfyUI's folder ``folder_name``."""
    if not prefix or os.path.isabs(prefix) or ".." in prefix.replace("\\", "/").split("/"):
        raise ValueError(f"filename_prefix {prefix!r} must be a relative name inside "
                         f"models/{folder_name} (sub-folders allowed, no '..')")
    folder = folder_paths.get_folder_paths(folder_name)[0]
    subdir, base = os.path.split(prefix)
    target = os.path.join(folder, subdir)
    os.makedirs(target, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)\.safetensors$")
    used = [int(m.group(1)) for f in os.listdir(target) if (m := pattern.match(f))]
    return os.path.join(target, f"{base}_{max(used, default=0) + 1:05d}.safetensors")


class ActSaveMaps(IO.ComfyNode):
    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActSaveMaps",
            display_name="AcT Save Maps",
            category="AcT",
            description=("Saves transport maps to models/act_maps as a safetensors map file "
                         "(with the model family, method and a hash of the prompts), to load "
                         "later with AcT Load Maps or use with the `act` command line."),
            search_aliases=["save act maps", "export transport maps"],
            is_output_node=True,
            inputs=[
                IO.Custom("ACT_MAPS").Input("maps", tooltip="The maps to save."),
                IO.String.Input("filename_prefix", default="act/maps",
                                tooltip="File name inside models/act_maps; a counter and "
                                        ".safetensors are appended."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, maps: MapSet, filename_prefix: str) -> IO.NodeOutput:
        path = next_path(filename_prefix)
        save_maps(path, maps)
        rel = os.path.relpath(path, folder_paths.get_folder_paths(FOLDER)[0])
        return IO.NodeOutput(ui={"text": [f"saved {rel}"]})


class ActLoadMaps(IO.ComfyNode):
    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActLoadMaps",
            display_name="AcT Load Maps",
            category="AcT",
            description=("Loads a transport-map file from models/act_maps. The file is checked "
                         "(format, shapes, finite values); AcT Apply Transport then checks that "
                         "it fits the model (family, sites, widths)."),
            search_aliases=["load act maps", "import transport maps"],
            inputs=[
                IO.Combo.Input("map_name", options=folder_paths.get_filename_list(FOLDER),
                               tooltip="A map file in models/act_maps."),
            ],
            outputs=[IO.Custom("ACT_MAPS").Output(display_name="maps",
                                                  tooltip="The loaded maps.")],
        )

    @classmethod
    def fingerprint_inputs(cls, map_name: str):
        path = folder_paths.get_full_path(FOLDER, map_name)
        if path is None:
            return map_name
        stat = os.stat(path)
        return f"{map_name}:{stat.st_mtime_ns}:{stat.st_size}"

    @classmethod
    def execute(cls, map_name: str) -> IO.NodeOutput:
        path = folder_paths.get_full_path(FOLDER, map_name)
        if path is None:
            raise FileNotFoundError(f"no map file {map_name!r} in models/act_maps")
        try:
            maps = load_maps(path)
        except MapFileError as error:
            raise ValueError(f"AcT Load Maps: {error}") from error
        gate = getattr(maps, "sequence_gate", None)
        if gate is not None:  # read only by the language-model path (act_core.hf.gating)
            raise ValueError(
                f"AcT Load Maps: {map_name!r} holds a sequence gate (a language model's, read at "
                f"{gate.site!r}; written by `act fit --gate sequence`), which these nodes do not "
                f"apply: without it the maps would steer every input. Use the file with `act "
                f"generate`, or fit the maps again without `--gate sequence`.")
        return IO.NodeOutput(maps)
