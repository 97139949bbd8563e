"""AcT Learn Transport's gate choice names the ramp: ``learned strict`` gives every training
target image g = 0, ``learned balanced`` ramps between the medians, ``learned`` is the default
ramp; the choice is recorded in the map's metadata (toy checkpoint, in-process)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]

# one prompt in both lists: source and target scores overlap, where the ramps differ
SOURCE, TARGET = ["a red circle", "a blue square"], ["a red circle", "a blue circle"]


def test_learn_gate_choice_names_the_ramp(act_pack, toy_checkpoint):
    import torch

    learn = act_pack.nodes.learn
    from act_pack.act_core.gate import DEFAULT_RAMP, LEARN_GATES, RAMPS, learn_gate

    assert learn_gate("off") is False
    assert learn_gate("learned") == DEFAULT_RAMP
    assert {learn_gate(f"learned {r}") for r in RAMPS} == set(RAMPS)
    with pytest.raises(ValueError, match="gate must be one of"):
        learn_gate("learned sometimes")
    options = learn.ActLearnTransport.define_schema().inputs
    gate_input = next(i for i in options if i.id == "gate")
    assert list(gate_input.options) == list(LEARN_GATES) and gate_input.default == "off"

    model, clip = toy_checkpoint
    src, tgt = learn.encode_prompts(clip, SOURCE), learn.encode_prompts(clip, TARGET)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    fitted = {ramp: learn.learn_maps(model, src, tgt, source=SOURCE, target=TARGET,
                                     sites="cross-attention outputs", support="unbounded",
                                     incremental=False, latent=latent, samples_per_prompt=4,
                                     gate=learn_gate(f"learned {ramp}"))
              for ramp in RAMPS}
    for ramp, maps in fitted.items():
        assert maps.metadata["extra"]["gate_ramp"] == ramp
    strict, balanced = fitted["strict"], fitted["balanced"]
    for site, tmap in strict.items():
        assert torch.equal(tmap.scale, balanced[site].scale)  # same maps, another ramp
        assert tmap.gate.target_gate < 1e-9  # strict: every training target sample at g = 0
    # balanced ramps from the target median: where the scores overlap, targets get g > 0
    assert max(tmap.gate.target_gate for tmap in balanced.values()) > 0.05
