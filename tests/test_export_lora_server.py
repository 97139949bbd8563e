"""AcT Export LoRA through the real ComfyUI server: the stock LoraLoaderModelOnly reads the file.

Maps learned in the server (style, cross-attention outputs, unbounded support) are exported by
the AcT Export LoRA node into the server's models/loras; ComfyUI's own LoraLoaderModelOnly at
strength s must then draw what AcT Apply Transport in mode 'folded' draws at lambda = s (within
one 8-bit level), and strength 0 the plain model's image.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from harness.comfy_server import txt2img_graph
from toyworld.experiments import fit_combos, heldout_combos
from toyworld.render import Scene

pytestmark = pytest.mark.comfyui

STYLE_SITES = "cross-attention outputs"
SEED = 21
STEPS = 8  # euler; enough for the comparison, and the server test stays short
SOURCE = "\n".join(Scene(c, s).prompt for c, s in fit_combos())
TARGET = "\n".join(Scene(c, s, "striped").prompt for c, s in fit_combos())
HELDOUT = [Scene(c, s).prompt for c, s in heldout_combos()[:1]]


def learn_node(sites: str) -> dict:
    return {"class_type": "ActLearnTransport", "inputs": {
        "model": ["1", 0], "clip": ["1", 1], "source_prompts": SOURCE,
        "target_prompts": TARGET, "sites": sites, "pattern": "", "method": "linear_act",
        "support": "unbounded", "incremental": True, "stages": 4, "collect_at": 0.0,
        "timestep_ranges": 1, "seed": 0, "latent": ["fit_latent", 0]}}


def act_graph(prompt: str, seed: int, strength: float, maps_node: dict, **apply_over) -> dict:
    """txt2img with ActLearnTransport -> ActApplyTransport in front of the KSampler."""
    g = txt2img_graph(prompt, seed=seed, batch=1, steps=STEPS, prefix="act")
    g["fit_latent"] = {"class_type": "EmptyLatentImage",
                       "inputs": {"width": 64, "height": 64, "batch_size": 4}}
    g["learn"] = maps_node
    g["apply"] = {"class_type": "ActApplyTransport", "inputs": {
        "model": ["1", 0], "maps": ["learn", 0], "strength": strength, "start_percent": 0.0,
        "end_percent": 1.0, "apply_to": "conditional", "support": "from maps", **apply_over}}
    g["5"]["inputs"]["model"] = ["apply", 0]
    return g


def images_of(server, graph) -> list[np.ndarray]:
    return server.images(server.run(graph))


def _export_graph() -> dict:
    g = act_graph(HELDOUT[0], seed=SEED, strength=1.0, maps_node=learn_node(sites=STYLE_SITES))
    g["export"] = {"class_type": "ActExportLoRA",
                   "inputs": {"model": ["1", 0], "maps": ["learn", 0],
                              "filename_prefix": "act_style_lora"}}
    return {k: v for k, v in g.items() if k in ("1", "fit_latent", "learn", "export")}


def _lora_graph(lora_name: str, strength: float) -> dict:
    g = txt2img_graph(HELDOUT[0], seed=SEED, batch=1, steps=STEPS, prefix="lora")
    g["lora"] = {"class_type": "LoraLoaderModelOnly",
                 "inputs": {"model": ["1", 0], "lora_name": lora_name,
                            "strength_model": strength}}
    g["5"]["inputs"]["model"] = ["lora", 0]
    return g


def test_stock_lora_loader_equals_folded_transport(comfy_server):
    entry = comfy_server.run(_export_graph())
    text = " ".join(entry["outputs"]["export"]["text"])
    name = re.search(r"models/loras/(\S+\.safetensors)", text).group(1)
    assert (comfy_server.base / "models" / "loras" / name).is_file()
    plain = images_of(comfy_server, txt2img_graph(HELDOUT[0], seed=SEED, batch=1, steps=STEPS,
                                                  prefix="p"))
    for strength in (0.0, 0.5, 1.0):
        lora = images_of(comfy_server, _lora_graph(name, strength))
        folded = images_of(comfy_server, act_graph(
            HELDOUT[0], seed=SEED, strength=strength, maps_node=learn_node(sites=STYLE_SITES),
            apply_to="both", mode="folded"))
        for a, b in zip(lora, folded, strict=True):
            diff = np.abs(a.astype(int) - b.astype(int)).max()
            assert diff <= 1, f"strength {strength}: LoRA and folded differ by {diff} levels"
        if strength == 0.0:
            assert all(np.abs(a.astype(int) - p.astype(int)).max() <= 1
                       for a, p in zip(lora, plain, strict=True))
        else:
            assert any(np.abs(a.astype(int) - p.astype(int)).max() > 8
                       for a, p in zip(lora, plain, strict=True))
