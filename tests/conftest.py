"""Shared fixtures: the real ComfyUI server with the toy checkpoint, started once per session;
the node pack imported in-process the way ComfyUI imports it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.comfy_env import COMFYUI_DIR, PACK  # PACK: the pack's module name in-process
from toyworld.checkpoint import checkpoint_path

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Mark ``server`` every test that uses the shared server or sits in a module that starts
    its own (``-m "not server"`` then runs everything else)."""
    from harness.comfy_server import ComfyServer

    for item in items:
        module = getattr(item, "module", None)
        if "comfy_server" in getattr(item, "fixturenames", ()) or \
                getattr(module, "ComfyServer", None) is ComfyServer:
            item.add_marker(pytest.mark.server)


def _require_comfyui(checkpoint: bool = True) -> None:
    if not (COMFYUI_DIR / "main.py").exists():
        pytest.fail("ComfyUI is not installed: run `make test` (or scripts/setup_env.sh "
                    "--with-comfyui) first", pytrace=False)
    if checkpoint and not checkpoint_path().exists():
        pytest.fail("the toy checkpoint is not installed: run `python -m toyworld.checkpoint "
                    "install` (make test does it)", pytrace=False)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the whole test session (stopped at the end)."""
    _require_comfyui()
    from harness.comfy_server import ComfyServer

    base = tmp_path_factory.mktemp("comfy_base")
    server = ComfyServer(base_dir=base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("ACT_SHOW_SERVER_LOG"):
            print(server.log_tail(20000))


@pytest.fixture(scope="session")
def act_pack(tmp_path_factory):
    """The repository imported in-process as a custom node pack (ComfyUI forced to --cpu).

    Nodes use relative imports (``from ..act_core import ...``), so the root is loaded as a
    package, as ComfyUI's loader does; ``act_pack.nodes.learn`` etc. are then importable.
    Its ``models/act_maps`` folder is made under a temporary directory, not in ComfyUI's tree.
    """
    _require_comfyui(checkpoint=False)
    if PACK in sys.modules:
        return sys.modules[PACK]
    from harness.comfy_env import import_comfy, import_pack

    import_comfy()
    import folder_paths

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder_paths, "models_dir", str(tmp_path_factory.mktemp("comfy_models")))
        return import_pack()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: threads only add overhead there, and on a
    busy machine they stall each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_checkpoint(act_pack):
    """(MODEL, CLIP) of the toy checkpoint, loaded in-process by ComfyUI's own loader."""
    _require_comfyui()
    import comfy.sd

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    return model, clip
