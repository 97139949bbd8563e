"""The pack as the ComfyUI registry and the node library see it: [tool.comfy], the icon, and
one help page per node, served by the real server where the frontend asks for it."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import tomllib
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "web" / "docs"


def _pages_images(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)


def test_tool_comfy_has_icon_and_requires_comfyui():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = config["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\s*\d+\.\d+\.\d+", comfy["requires-comfyui"])
    repo = config["project"]["urls"]["Repository"]
    assert comfy["Icon"].startswith(repo + "/raw/main/")
    icon = ROOT / comfy["Icon"].removeprefix(repo + "/raw/main/")
    with Image.open(icon) as image:
        assert image.format == "PNG" and image.size == (400, 400)
        assert len(image.convert("RGB").getcolors(1 << 24)) > 100  # a picture, not a flat fill


@pytest.mark.comfyui
def test_every_node_has_a_page_that_names_its_inputs_and_outputs(act_pack):
    from act_pack.nodes import NODES

    for node in NODES:
        schema = node.GET_SCHEMA()
        page = DOCS / f"{schema.node_id}.md"
        assert page.is_file(), f"no help page for {schema.node_id}: write {page}"
        text = page.read_text()
        assert text.startswith(f"# {schema.display_name}\n")
        missing = [i.id for i in schema.inputs if i.id not in text]
        assert not missing, f"{page.name} does not describe the inputs {missing}"
        for output in schema.outputs:
            assert (output.display_name or output.io_type) in text, (page.name, output)
        images = _pages_images(text)
        assert images, f"{page.name} has no picture"
        for image in images:
            assert (DOCS / image).is_file(), f"{page.name} links a missing picture {image}"
        assert "## Example" in text


@pytest.mark.comfyui
def test_the_server_serves_each_page_where_the_node_library_looks(comfy_server):
    info = comfy_server.get_json("/object_info")
    ours = {name: node for name, node in info.items() if node.get("category") == "AcT"}
    assert len(ours) >= 8
    for name, node in ours.items():
        # the frontend's rule: /extensions/<custom_nodes.FOLDER>/docs/<node id>.md
        module = node["python_module"].split(".")
        assert module[0] == "custom_nodes"
        base = f"{comfy_server.url}/extensions/{module[1].split('@')[0]}/docs/"
        with urllib.request.urlopen(base + f"{name}.md", timeout=30) as response:
            served = response.read().decode()
        assert served == (DOCS / f"{name}.md").read_text()
        for image in _pages_images(served):
            with urllib.request.urlopen(base + image, timeout=30) as response:
                assert response.headers["Content-Type"] == "image/png"
                assert response.read() == (DOCS / image).read_bytes()
