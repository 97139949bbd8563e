"""Concept negation on a video model: a tiny random-weight Wan 2.1 with its UMT5 text encoder.

Maps are learned with AcT Learn Transport's default sites (found by structure: Wan has no
preset) from prompts that name a concept (source) and the same prompts without it (target),
through the real tokenizer, text encoder and sampling path; then a prompt that names the
concept is sampled as a 4-frame video. At strength 0 every frame is bit-identical to the
unpatched model's; at strength 1 every frame changes.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch

from harness import encoder_recipes, family_recipes

pytestmark = pytest.mark.comfyui

CONCEPT = ", a pink elephant"
PROMPTS = ["a dog running on a beach", "a city street at night", "a boat on a lake",
           "a forest in autumn"]
FRAMES, STEPS, CFG, SEED = 4, 3, 3.0, 11




@pytest.fixture(scope="module")
def video(act_pack):
    torch.set_num_threads(1)
    families, encoders = family_recipes, encoder_recipes
    recipe = families.RECIPES["WAN21_T2V"]
    recipe = families.Recipe(recipe.config, {**recipe.unet_config, "text_dim": 32}, 32,
                             (16, FRAMES, 8, 8))  # the tiny UMT5 is 32 wide
    model, clip = families.build(recipe), encoders.build_clip("WAN21_T2V")
    learn = importlib.import_module(f"{act_pack.__name__}.nodes.learn")
    apply = importlib.import_module(f"{act_pack.__name__}.nodes.apply")
    source = [p + CONCEPT for p in PROMPTS[:3]]
    target = PROMPTS[:3]
    latent = torch.zeros(1, *recipe.latent)
    maps = learn.learn_maps(model, learn.encode_prompts(clip, source),
                            learn.encode_prompts(clip, target), source=source, target=target,
                            support="minmax", latent={"samples": latent}, seed=1,
                            samples_per_prompt=4)
    held_out = PROMPTS[3] + CONCEPT
    positive, negative = learn.encode_prompts(clip, [held_out, ""])
    return model, maps, apply, latent, positive, negative


def _sample(model, latent, positive, negative) -> torch.Tensor:
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent, SEED)
    return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", positive, negative,
                               latent, seed=SEED, disable_pbar=True)


def test_concept_maps_leave_frames_bit_identical_at_zero_and_change_them_at_one(video):
    model, maps, apply, latent, positive, negative = video
    assert maps.metadata["model"]["family"] == "wan21_t2v"
    assert maps and all(site.startswith("blocks.") for site in maps)
    plain = _sample(model, latent, positive, negative)  # (1, 16, T, H, W)
    zero = _sample(apply.patch_model(model, maps, 0.0), latent, positive, negative)
    one = _sample(apply.patch_model(model, maps, 1.0), latent, positive, negative)
    assert plain.shape[2] == FRAMES
    assert torch.equal(zero, plain)
    per_frame = (one - plain).abs().amax(dim=(0, 1, 3, 4))  # (T,)
    assert torch.isfinite(one).all() and bool((per_frame > 1e-3).all()), per_frame
