"""The learn node's memo (nodes/memo.py): a key that changes with everything that determines
the maps, and stays the same where nothing does (a clone of the same model)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def toy(act_pack, toy_checkpoint):
    model, clip = toy_checkpoint
    encode = act_pack.nodes.learn.encode_prompts
    return act_pack.nodes.memo, model, encode(clip, ["a red circle"]), encode(clip,
                                                                              ["a blue circle"])


def test_the_key_follows_model_weights_prompts_and_settings(toy):
    memo, model, red, blue = toy
    key = memo.fingerprint(model, (red, blue), {"method": "linear_act"})
    assert memo.fingerprint(model.clone(), (red, blue), {"method": "linear_act"}) == key
    assert memo.fingerprint(model, (blue, blue), {"method": "linear_act"}) != key
    assert memo.fingerprint(model, (red, blue), {"method": "mean_act"}) != key
    patched = model.clone()  # a LoRA-like weight patch upstream of the learn node
    patched.add_patches({"diffusion_model.out.2.bias": (torch.ones(4),)}, 0.5)
    assert memo.fingerprint(patched, (red, blue), {"method": "linear_act"}) != key
    other = model.clone()
    other.add_patches({"diffusion_model.out.2.bias": (torch.full((4,), 2.0),)}, 0.5)
    assert memo.fingerprint(other, (red, blue), {"method": "linear_act"}) != memo.fingerprint(
        patched, (red, blue), {"method": "linear_act"})


def test_recall_keeps_the_most_recent_map_sets(toy):
    memo = toy[0]
    for i in range(memo.MAPS_KEPT + 1):
        memo.remember(f"k{i}", {"maps": i})
    assert memo.recall("k0") is None
    assert memo.recall(f"k{memo.MAPS_KEPT}") == {"maps": memo.MAPS_KEPT}
