"""Make PyPI's CUDA-only torchvision importable on a CPU-only torch.

Imported from a ``.pth`` file in the project's virtual environment (see
scripts/setup_env.sh). It registers a meta-path finder that, the first time
``torchvision`` is imported, defines the two operator schemas that torchvision's
Python code looks up at import time (``torchvision::nms`` and
``torchvision::qnms``). Their C++ kernels stay unavailable; ComfyUI's core never
calls them. Nothing of ComfyUI or torchvision is modified.
"""

import importlib.abc
import sys

_DONE = False


def _define_schemas() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in (
        "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    ):
        try:
            lib.define(schema)
        except RuntimeError:  # already defined by a working build
            pass
    # keep the Library object alive for the life of the process
    sys.modules[__name__].__dict__["_LIB"] = lib


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_schemas()
        return None


sys.meta_path.insert(0, _Finder())
