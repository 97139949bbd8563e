"""Gated maps through the real ComfyUI server on the toy checkpoint: AcT Learn Transport learns
the gate, AcT Save Maps writes a gated map file, and AcT Apply Transport with the learned gate
leaves an image whose prompt does not ask for the dot as it is, while it still removes the dot
where the prompt asks for it (the ungated map changes both)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from act_core import load_maps
from evaluation.metrics import read_image
from harness.comfy_server import add_sampling
from toyworld.experiments import NEGATION_SITES, fit_combos, heldout_combos
from toyworld.render import Scene

pytestmark = pytest.mark.comfyui

CKPT = "act_toyworld_sd15.safetensors"
SOURCE = "\n".join(Scene(c, s, "plain", True).prompt for c, s in fit_combos())
TARGET = "\n".join(Scene(c, s, "plain", False).prompt for c, s in fit_combos())
COLOUR, SHAPE = heldout_combos()[0]
NO_DOT, DOT = Scene(COLOUR, SHAPE).prompt, Scene(COLOUR, SHAPE, "plain", True).prompt


def _graph() -> dict:
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "lat": {"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "learn": {"class_type": "ActLearnTransport", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "source_prompts": SOURCE,
            "target_prompts": TARGET, "sites": NEGATION_SITES, "pattern": "",
            "method": "linear_act", "support": "unbounded", "incremental": True, "stages": 4,
            "collect_at": 0.0, "timestep_ranges": 1, "seed": 0, "latent": ["lat", 0],
            "gate": "learned"}},
        "save": {"class_type": "ActSaveMaps", "inputs": {"maps": ["learn", 0],
                                                        "filename_prefix": "act/gated"}},
    }
    models = {"plain": ["ckpt", 0]}
    for variant, gate in (("gated", "learned"), ("ungated", "off")):
        g[f"apply_{variant}"] = {"class_type": "ActApplyTransport", "inputs": {
            "model": ["ckpt", 0], "maps": ["learn", 0], "strength": 1.0, "start_percent": 0.0,
            "end_percent": 1.0, "apply_to": "conditional", "support": "from maps",
            "gate": gate}}
        models[variant] = [f"apply_{variant}", 0]
    runs = [("no_dot", NO_DOT, v) for v in ("plain", "gated", "ungated")]
    runs += [("dot", DOT, v) for v in ("plain", "gated")]
    for name, prompt, variant in runs:
        g[f"pos_{name}"] = {"class_type": "CLIPTextEncode",
                            "inputs": {"text": prompt, "clip": ["ckpt", 1]}}
        add_sampling(g, f"_{name}_{variant}", model=models[variant], positive=[f"pos_{name}", 0],
                     seed=5000, prefix=f"gate_{name}_{variant}", names=("ks", "dec", "img"))
    return g


def _gate_lines(comfy_server) -> list[str]:
    return [line for line in comfy_server.log_path.read_text(errors="replace").splitlines()
            if "AcT gate, decided" in line]


def test_gated_negation_leaves_other_images_alone_and_still_removes_the_dot(comfy_server):
    before = len(_gate_lines(comfy_server))
    entry = comfy_server.run(_graph(), timeout=1800)

    def image(name: str, variant: str) -> np.ndarray:
        return comfy_server.images(entry, f"img_{name}_{variant}")[0].astype(np.int16)

    plain, gated, ungated = (image("no_dot", v) for v in ("plain", "gated", "ungated"))
    gated_change = float(np.abs(gated - plain).mean())
    ungated_change = float(np.abs(ungated - plain).mean())
    # measured with this 6-prompt fit: 3.97 levels gated (12.9 when the gate was re-decided at
    # every step instead of held from the first); the 18-prompt benchmark: docs/results_gate.md
    assert gated_change < ungated_change, (gated_change, ungated_change)
    assert read_image(image("dot", "plain").astype(np.uint8)).dot
    assert not read_image(image("dot", "gated").astype(np.uint8)).dot
    # the log says, once per gated sampling run, how far each image's gate opened: two gated
    # runs of one image each (the ungated and plain runs log nothing); the dot image's gate is
    # open wider and at more sites than the other's
    lines = _gate_lines(comfy_server)[before:]
    assert len(lines) == 2 and all("image 1: " in line and "image 2" not in line
                                   for line in lines), lines
    read = sorted((float(m[1]), int(m[2])) for m in (re.search(
        r"image 1: ([0-9.]+) mean, open at ([0-9]+)/31 sites", line) for line in lines))
    assert read[1][0] > read[0][0] and read[1][1] > read[0][1], lines
    # the learn node's report says what the gates learned, and that they tell the sets apart
    report = "\n".join(entry["outputs"]["learn"]["text"])
    assert "\ngates: 31 of 31 sites; AUROC median " in report and "held out" in report
    assert "barely tell" not in report, report
    files = sorted((comfy_server.base / "models" / "act_maps" / "act").glob("gated*"))
    maps = load_maps(files[-1])
    assert maps.metadata["version"] == 2 and all(m.gate is not None for m in maps.values())


def test_the_gate_line_names_each_transported_image_and_the_ones_left_alone(act_pack):
    """The console line of describe_gates, on gates set by hand: two sites, a batch of two
    images in a conditional half and an unconditional half (ComfyUI's cond_or_uncond [0, 1])."""
    import importlib

    import torch

    describe = importlib.import_module(f"{act_pack.__name__}.nodes.apply").describe_gates
    states = {"a": {"hold": True, "held": torch.tensor([0.0, 1.0, 0.0, 0.5])},
              "b": {"hold": True, "held": torch.tensor([0.0, 0.5, 0.0, 0.0])}}
    both = describe(states, 1.0, [0, 1])
    assert both == ("AcT gate, decided at the first step: "
                    "image 1: 0.00 mean, open at 0/2 sites (left as it is); "
                    "image 2: 0.75 mean, open at 2/2 sites; "
                    "image 1 (uncond): 0.00 mean, open at 0/2 sites (left as it is); "
                    "image 2 (uncond): 0.25 mean, open at 1/2 sites")
    # apply_to conditional: the uncond half has strength 0 and is not reported
    cond = describe(states, torch.tensor([1.0, 1.0, 0.0, 0.0]), [0, 1])
    assert cond == both.split("; image 1 (uncond)")[0]
    assert describe(states, torch.zeros(4), [0, 1]) == ""  # a call that transports nothing
    assert describe({"a": {"hold": True}}, 1.0, [0]) == ""  # no gate decided yet
