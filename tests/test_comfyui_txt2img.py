"""The toy checkpoint draws the toy world through the real ComfyUI server's stock nodes."""

import numpy as np
import pytest

from evaluation.metrics import read_image
from harness.comfy_server import txt2img_graph

pytestmark = pytest.mark.comfyui


def test_stock_txt2img_draws_the_prompt(comfy_server):
    prompts = ["a red circle", "a striped blue square", "a green triangle with a black dot"]
    readings = []
    for i, prompt in enumerate(prompts):
        entry = comfy_server.run(txt2img_graph(prompt, seed=100 + i, batch=2, prefix=f"t{i}"))
        images = comfy_server.images(entry)
        assert len(images) == 2
        assert images[0].shape == (64, 64, 3) and images[0].dtype == np.uint8
        readings.append([read_image(im) for im in images])
    assert all(r.colour == "red" and r.shape == "circle" for r in readings[0])
    assert any(r.style == "striped" for r in readings[1])
    assert all(r.colour == "blue" for r in readings[1])
    assert all(r.dot for r in readings[2])
    assert not any(r.dot for r in readings[0])


def test_same_seed_same_image(comfy_server):
    a = comfy_server.images(comfy_server.run(txt2img_graph("a yellow square", seed=7, prefix="s1")))
    b = comfy_server.images(comfy_server.run(txt2img_graph("a yellow square", seed=7, prefix="s2")))
    assert np.array_equal(a[0], b[0])


def test_server_reports_sd15_checkpoint(comfy_server):
    info = comfy_server.get_json("/object_info/CheckpointLoaderSimple")
    names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    flat = names[0] if isinstance(names[0], list) else names[1]["options"]
    assert "act_toyworld_sd15.safetensors" in flat
