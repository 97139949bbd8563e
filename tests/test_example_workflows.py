"""Every example workflow, opened in the real ComfyUI web page and run on the real server.

The page (headless Chromium) does what a user's browser does: it loads the UI-format file with
``app.loadGraphData``, converts it to the API graph and queues it with ``app.queuePrompt``.
The server runs it on the toy checkpoint; the test checks every image and the saved map file.
"""

from __future__ import annotations

import io
import json
import urllib.request

import pytest

from harness.comfy_page import ComfyPage
from harness.comfy_server import PACK_NAME
from harness.workflow_format import to_api, to_ui
from harness.workflows import EXAMPLES, WORKFLOW_DIR, toy_server
from toyworld.example_maps import MAPS_DIR, STRIPED_MAP

pytestmark = pytest.mark.comfyui

GRID_TILE, GRID_LABEL = 128, 18  # ActStrengthGrid's tile side and label strip for 64x64 images


@pytest.fixture(scope="module")
def server(comfy_server):
    """A server of this module's own with the shipped maps installed, as on a fresh install.

    It runs torch on one thread: headless Chromium works beside it while a graph runs, and on
    the 2-core CI machine two torch threads sharing the cores with it made act_style_intensity
    take 557 s against 86 s with one (measured 2026-12-06). ``comfy_server`` is asked for its
    check that ComfyUI and the toy checkpoint are installed, and so that these tests carry the
    ``server`` mark."""
    if not (MAPS_DIR / STRIPED_MAP).is_file():
        pytest.fail(f"{MAPS_DIR / STRIPED_MAP} is missing: run `python -m "
                    "harness.build_maps` and commit it", pytrace=False)
    with toy_server(threads=1) as own:
        yield own


@pytest.fixture(scope="module")
def object_info(server):
    return server.get_json("/object_info")


@pytest.fixture(scope="module")
def page(server):
    with ComfyPage(server.url) as comfy_page:
        yield comfy_page


def _workflow(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text())


def _get(server, path: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        return response.read(), response.headers.get("Content-Type", "")


def _expected_image_shape(api: dict, save_id: str) -> tuple[int, int, int]:
    source = api[api[save_id]["inputs"]["images"][0]]
    if source["class_type"] == "ActStrengthGrid":
        columns = len(source["inputs"]["strengths"].split(","))
        return GRID_LABEL + GRID_TILE, GRID_TILE * columns, 3
    latent = api[api[source["inputs"]["samples"][0]]["inputs"]["latent_image"][0]]["inputs"]
    return latent["height"], latent["width"], 3


def test_workflow_files_match_their_specs(object_info):
    for name, make in EXAMPLES.items():
        assert _workflow(name) == to_ui(make(), object_info), (
            f"example_workflows/{name}.json is out of date: run `python -m harness.workflows`")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_workflow_runs_from_the_web_page(name, server, page, object_info):
    workflow = _workflow(name)
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= page.registered_types(), "the page does not know every node type"

    report = page.load(workflow)
    assert report.missing == [], f"the page reported missing nodes: {report.missing}"
    assert report.errors == [], f"the page logged errors while loading: {report.errors}"
    assert all(n["known"] and not n["has_errors"] for n in report.nodes.values()), report.nodes

    api = to_api(EXAMPLES[name](), object_info)
    converted = page.graph_to_prompt()["output"]
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
            for k, v in converted.items()} == api, "the page read other widget values"

    before = len(page.errors)
    entry = server.wait(page.queue(), timeout=1200)
    assert entry["status"]["status_str"] == "success"
    assert page.errors[before:] == [], "the page logged errors while the workflow ran"
    for node_id, node in api.items():
        if node["class_type"] == "SaveImage":
            images = server.images(entry, node_id)
            assert len(images) == 1, f"SaveImage {node_id} saved {len(images)} images"
            assert images[0].shape == _expected_image_shape(api, node_id)
        elif node["class_type"] == "ActSaveMaps":
            _check_saved_maps(server, entry, node_id, node)


def _check_saved_maps(server, entry, node_id: str, node: dict) -> None:
    from act_core import load_maps

    text = entry["outputs"][node_id]["text"][0]
    assert text.startswith("saved " + node["inputs"]["filename_prefix"] + "_")
    name = text.removeprefix("saved ")
    assert len(load_maps(server.base / "models" / "act_maps" / name)) > 0
    info = server.get_json("/object_info/ActLoadMaps")["ActLoadMaps"]
    assert name in info["input"]["required"]["map_name"][1]["options"], "not offered to load"


def test_templates_are_listed_and_thumbnails_served(server):
    from PIL import Image

    listed = server.get_json("/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == sorted(EXAMPLES)
    for name in EXAMPLES:
        base = f"/api/workflow_templates/{PACK_NAME}/{name}"
        body, _ = _get(server, base + ".json")
        assert json.loads(body) == _workflow(name)
        body, kind = _get(server, base + ".jpg")  # what the template browser shows
        assert kind == "image/jpeg" and Image.open(io.BytesIO(body)).format == "JPEG"
        body, kind = _get(server, base + ".png")
        png = Image.open(io.BytesIO(body))
        assert kind == "image/png" and min(png.size) >= 64
        assert json.loads(png.text["workflow"]) == _workflow(name), (
            f"{name}.png was made from another version of the workflow: run "
            "`python -m harness.workflows --thumbnails`")
