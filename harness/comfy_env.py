"""Import the real ComfyUI (installed by scripts/setup_env.sh --with-comfyui) in-process.

Used by the toy-world training script and by tests that need ComfyUI's own model classes.
ComfyUI's top-level modules (``comfy``, ``nodes``, ``folder_paths``...) live in its source
tree, which is put on ``sys.path`` here; ``--cpu`` is forced before model management loads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["COMFYUI_DIR", "PACK", "import_comfy", "import_pack"]

#: ComfyUI's source folder: the one scripts/setup_env.sh installs, or $ACT_COMFYUI_DIR
COMFYUI_DIR = Path(os.environ.get("ACT_COMFYUI_DIR")
                   or Path(__file__).resolve().parent.parent / ".comfyui" / "ComfyUI")


def import_comfy(cpu: bool = True, pytorch_attention: bool = True, fp32_text_encoder: bool = True):
    """Make ``import comfy`` work and return the ComfyUI source folder.

    Raises FileNotFoundError with the set-up command if ComfyUI is not installed.
    """
    if not (COMFYUI_DIR / "comfy").is_dir():
        raise FileNotFoundError(
            f"ComfyUI is not installed at {COMFYUI_DIR}; run `scripts/setup_env.sh --with-comfyui`"
        )
    if str(COMFYUI_DIR) not in sys.path:
        sys.path.insert(0, str(COMFYUI_DIR))
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
    # ComfyUI's CPU default (sub-quadratic attention, fp16 text encoder) is 5-10x slower here
    if pytorch_attention:
        comfy.cli_args.args.use_pytorch_cross_attention = True
    if fp32_text_encoder:
        comfy.cli_args.args.fp32_text_enc = True
    return COMFYUI_DIR


#: The module name the repository gets when imported as a node pack here (ComfyUI uses the
#: folder name).
PACK = "act_pack"


def import_pack():
    """The repository imported in-process as a custom node pack, as ComfyUI's loader does
    (relative imports such as ``from ..act_core import`` work); ``import_comfy`` first."""
    import importlib.util

    if PACK in sys.modules:
        return sys.modules[PACK]
    import_comfy()
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(PACK, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK]
        raise
    return module
