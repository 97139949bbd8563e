"""ComfyUI nodes of AcT (V3 API). The only package here that imports ComfyUI."""

from __future__ import annotations

from comfy_api.latest import IO, ComfyExtension
from typing_extensions import override

from .apply import ActApplyTransport
from .clip import ActApplyTransportCLIP, ActLearnTextTransport
from .export import ActExportLoRA
from .files import ActLoadMaps, ActSaveMaps, register_folder
from .grid import ActStrengthGrid
from .learn import ActLearnTransport
from .sliders import ActSliderPanel

__all__ = ["NODES", "ActExtension", "comfy_entrypoint"]

register_folder()

NODES: list[type[IO.ComfyNode]] = [ActLearnTransport, ActApplyTransport, ActSaveMaps,
                                   ActLoadMaps, ActStrengthGrid, ActLearnTextTransport,
                                   ActApplyTransportCLIP, ActExportLoRA, ActSliderPanel]


class ActExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[IO.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> ActExtension:
    return ActExtension()
