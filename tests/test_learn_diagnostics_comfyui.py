"""The learn node's diagnosis through the real ComfyUI server on the toy checkpoint: it warns
when the two prompt sets do not differ, and when the fitted maps move nothing, in the node's
text, in the server log and in the picture a Preview Image node shows."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from toyworld.experiments import fit_combos
from toyworld.render import Scene

pytestmark = pytest.mark.comfyui

COMBOS = fit_combos()[:6]  # a few prompts: the server tests stay short
SOURCE = "\n".join(Scene(c, s).prompt for c, s in COMBOS)
TARGET = "\n".join(Scene(c, s, "striped").prompt for c, s in COMBOS)


def _graph(source: str, target: str, **over) -> dict:
    inputs = {"model": ["1", 0], "clip": ["1", 1], "source_prompts": source,
              "target_prompts": target, "sites": "auto", "pattern": "", "method": "linear_act",
              "support": "unbounded", "incremental": False, "stages": 1, "collect_at": 0.0,
              "timestep_ranges": 1, "seed": 0, "latent": ["latent", 0],
              "samples_per_prompt": 4}
    inputs.update(over)
    return {
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "act_toyworld_sd15.safetensors"}},
        "latent": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "learn": {"class_type": "ActLearnTransport", "inputs": inputs},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["learn", 1]}},
    }


def _run(server, graph: dict) -> tuple[str, list]:
    entry = server.run(graph)
    text = "\n".join(entry["outputs"]["learn"]["text"])
    images = server.images(entry, "preview")
    return text, images


def test_a_learn_with_source_equal_to_target_warns(comfy_server):
    """With a gate learned too, the report also says the gates cannot tell the sets apart."""
    text, images = _run(comfy_server, _graph(SOURCE, SOURCE, gate="learned"))
    assert "barely differ" in text
    assert "barely differ" in comfy_server.log_tail(200000)
    assert "\ngates: " in text and "held out" in text
    assert "WARNING: the learned gates barely tell the source from the target" in text
    assert "the learned gates barely tell" in comfy_server.log_tail(200000)
    # the picture writes every warning of the text in red, whole (wrapped): the sets (the
    # diagnosis), the site choice (auto found nothing to close) and the gates
    warnings = [line[len("WARNING: "):] for line in text.splitlines()
                if line.startswith("WARNING: ")]
    assert len(warnings) >= 3, text
    img = images[0]
    red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    warned = {(int(row) - 18) // 12 for row in np.nonzero(red[: img.shape[0] - 330].any(1))[0]}
    assert len(warned) == sum(len(textwrap.wrap(f"W: {w}", 114)) for w in warnings), warned
    assert len(images) == 1 and images[0].shape[1] >= 640  # the chart, one picture
    assert images[0].std() > 0  # bars and text, not a blank image


def test_a_learn_whose_maps_move_nothing_says_so(comfy_server):
    """LinEAS with a sparsity that switches off every site, on prompt sets that do differ:
    the diagnosis says the maps move nothing (and not that the sets are alike)."""
    text, images = _run(comfy_server, _graph(SOURCE, TARGET, method="lineas",
                                             lineas_steps=3, lineas_batch=2, sparsity=10.0))
    assert "move almost nothing" in text and "barely differ" not in text
    assert "0 with a non-identity map" in text
    assert "move almost nothing" in comfy_server.log_tail(200000)
    assert len(images) == 1


def _text_graph(source: str, target: str, method: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "act_toyworld_sd15.safetensors"}},
        "learn": {"class_type": "ActLearnTextTransport", "inputs": {
            "clip": ["1", 1], "source_prompts": source, "target_prompts": target,
            "sites": "layer outputs", "pattern": "", "method": method, "support": "unbounded"}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["learn", 1]}},
    }


def test_the_text_encoder_learn_warns_as_the_model_learn_does(comfy_server):
    """AcT Learn Text-Encoder Transport with source = target: the warning is in the node's
    text and the server log, and the picture is drawn."""
    text, images = _run(comfy_server, _text_graph(SOURCE, SOURCE, "linear_act"))
    assert "barely differ" in text and "12 sites" in text
    assert "AcT Learn Text-Encoder Transport: source and target barely differ" in (
        comfy_server.log_tail(200000))
    assert len(images) == 1 and images[0].std() > 0


def test_the_text_encoder_learn_with_sites_auto_reports_its_choice(comfy_server):
    """AcT Learn Text-Encoder Transport with ``sites = auto``, through the server: the node's
    text lists every preset's held-out score and the one learned."""
    graph = _text_graph(SOURCE, TARGET, "linear_act")
    graph["learn"]["inputs"]["sites"] = "auto"
    text, images = _run(comfy_server, graph)
    assert "sites = auto chose '" in text and "2 source / 2 target prompts held out" in text
    for preset in ("layer outputs", "final norm", "layer norms"):
        assert f"  {preset}" in text
    assert len(images) == 1
