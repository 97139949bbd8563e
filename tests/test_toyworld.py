"""The toy world's analytic metrics read back what the renderer drew (>= 97% per attribute)."""

import numpy as np
import pytest

from evaluation.metrics import read_image
from toyworld.render import COLOURS, SHAPES, STYLES, Scene, all_scenes, parse_prompt, render


def test_every_prompt_round_trips_through_parse():
    for scene in all_scenes():
        assert parse_prompt(scene.prompt) == scene
    with pytest.raises(ValueError):
        parse_prompt("a purple hexagon")


def test_prompt_wording():
    assert Scene("red", "circle").prompt == "a red circle"
    scene = Scene("blue", "square", "striped", True)
    assert scene.prompt == "a striped blue square with a black dot"


@pytest.mark.parametrize("size", [64, pytest.param(96, marks=pytest.mark.slow)])
def test_metrics_agree_with_renderer(size):
    rng = np.random.default_rng(20261121 + size)
    scenes = all_scenes() * 4  # 288 jittered images, every combination 4 times
    hits = {"colour": 0, "shape": 0, "style": 0, "dot": 0}
    for scene in scenes:
        r = read_image(render(scene, size, rng))
        hits["colour"] += r.colour == scene.colour
        hits["shape"] += r.shape == scene.shape
        hits["style"] += r.style == scene.style
        hits["dot"] += r.dot == scene.dot
    rates = {k: v / len(scenes) for k, v in hits.items()}
    assert min(rates.values()) >= 0.97, rates


def test_metrics_on_uint8_and_blank_images():
    img = (render(Scene("yellow", "triangle", "outlined")) * 255).astype(np.uint8)
    r = read_image(img)
    assert (r.colour, r.shape, r.style, r.dot) == ("yellow", "triangle", "outlined", False)
    blank = np.full((64, 64, 3), 0.84, np.float32)
    r = read_image(blank)
    assert r.colour is None and r.shape is None and not r.dot


def test_vocabulary_is_the_documented_one():
    assert COLOURS == ("red", "green", "blue", "yellow")
    assert SHAPES == ("circle", "square", "triangle")
    assert set(STYLES) == {"plain", "striped", "outlined"}
