"""Shared fixtures: the real ComfyUI server with the toy checkpoint, started once per session."""

from __future__ import annotations

import os

import pytest

from toyworld.checkpoint import checkpoint_path
from toyworld.comfy_env import COMFYUI_DIR


def _require_comfyui() -> None:
    if not (COMFYUI_DIR / "main.py").exists():
        pytest.fail("ComfyUI is not installed: run `make test` (or scripts/setup_env.sh "
                    "--with-comfyui) first", pytrace=False)
    if not checkpoint_path().exists():
        pytest.fail("the toy checkpoint is not installed: run `python -m toyworld.checkpoint "
                    "install` (make test does it)", pytrace=False)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the whole test session (stopped at the end)."""
    _require_comfyui()
    from toyworld.comfy_server import ComfyServer

    base = tmp_path_factory.mktemp("comfy_base")
    server = ComfyServer(base_dir=base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("ACT_SHOW_SERVER_LOG"):
            print(server.log_tail(20000))
