"""AcT for ComfyUI: steer image models by transporting activations (Rodriguez et al., ICLR 2025).

ComfyUI imports this folder as a custom node pack and calls ``comfy_entrypoint``. Outside
ComfyUI (pytest, plain ``import``) nothing of ComfyUI is imported: the library is ``act_core``.
Loaded as a plain module rather than a package (pytest imports a repository root whose folder
name is no Python name, e.g. a clone in ``fresh-check/``, as ``__init__``), it exports no nodes,
even where ComfyUI is importable.
"""

import importlib.util

#: Served by ComfyUI under /extensions/<folder>/: the node library's help pages are
#: web/docs/<node id>.md (pictures in web/docs/images/).
WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
else:
    __all__ = ["WEB_DIRECTORY"]
