"""The text-encoder nodes on tiny random-weight instances of the encoders ComfyUI's CLIP
loaders build: CLIP-L (SD1), CLIP-L + CLIP-G (SDXL), CLIP-L + CLIP-G + T5-XXL (SD3),
CLIP-L + T5-XXL (Flux), UMT5-XXL (Wan), Qwen3 (Z-Image), CLIP-L + Llama (HunyuanVideo),
Gemma-2 (Lumina 2), Chinese BERT + mT5-XL (HunyuanDiT), Qwen2.5-VL + ByT5 (HunyuanImage 2.1),
Gemma 3 (CLIPLoader), LTX-2's Gemma 3 12B with its text projection, MiniMax H3's Qwen3-VL
and Mistral 3 (Flux.2; its tokenizer needs transformers < 5, so it runs in
tests/test_text_encoder_mistral3.py's subprocess), built with ComfyUI's own CLIP classes
(harness/encoder_recipes.py).

For each: the structure presets find sites on every encoder; strength 0 encodes
bit-identically, strength 1 changes the encoding; a save/load round trip encodes
bit-identically; maps of another encoder family are refused naming both; on a CLIP with several
encoders, steering one leaves the others' part of the conditioning unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from act_core.diagnose import Diagnosis
from act_core.patch import interventions
from harness import encoder_recipes

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]

SOURCE, TARGET = encoder_recipes.MATRIX_SOURCE, encoder_recipes.MATRIX_TARGET
PROMPT = encoder_recipes.MATRIX_PROMPT


ENCODERS = encoder_recipes.ENCODERS


@pytest.fixture(scope="module")
def clip_nodes(act_pack):
    return importlib.import_module(f"{act_pack.__name__}.nodes.clip")


def _encode(clip, prompt: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor | None]:
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    return cond, pooled


def _equal(a, b) -> bool:
    return all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module", params=list(ENCODERS))
def case(request, clip_nodes):
    blocked = encoder_recipes.needs_transformers4(request.param)
    if blocked:
        pytest.skip(blocked)
    clip = encoder_recipes.build_clip(request.param)
    maps = clip_nodes.learn_text_maps(clip, SOURCE, TARGET, "layer outputs", "", "linear_act",
                                      "unbounded")
    return SimpleNamespace(family=request.param, clip=clip, maps=maps, baseline=_encode(clip))


def test_layer_outputs_of_every_encoder_are_found(case, clip_nodes):
    encoders = clip_nodes.encoders_of(case.clip)
    assert set(encoders) == set(ENCODERS[case.family])
    assert case.maps.metadata["model"]["encoders"] == sorted(encoders)
    assert list(case.maps.metadata["extra"]["diagnosis"]["sites"]) == list(case.maps)
    for site, tmap in case.maps.items():
        assert torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all(), site
    assert not interventions(case.clip.cond_stage_model)


def test_final_norm_and_layer_norm_presets_find_sites(case, clip_nodes):
    patterns, sites = clip_nodes.choose_text_sites(case.clip, "layer norms", "", "all", PROMPT)
    assert sites and all(s.layout == "tokens" for s in sites)
    if case.family in encoder_recipes.NO_FINAL_NORM:
        with pytest.raises(LookupError, match="no final_norms sites ran"):
            clip_nodes.choose_text_sites(case.clip, "final norm", "", "all", PROMPT)
        return
    final, sites = clip_nodes.choose_text_sites(case.clip, "final norm", "", "all", PROMPT)
    assert sites and all(s.layout == "tokens" for s in sites)
    assert {p.split(".", 1)[0] for p in final} <= set(ENCODERS[case.family])


def test_strength_zero_is_bit_identical_and_one_changes(case, clip_nodes):
    assert _equal(_encode(clip_nodes.patch_clip(case.clip, case.maps, 0.0)), case.baseline)
    cond, _ = _encode(clip_nodes.patch_clip(case.clip, case.maps, 1.0))
    assert torch.isfinite(cond).all()
    assert not torch.allclose(cond, case.baseline[0], rtol=1e-3, atol=1e-3)
    assert _equal(_encode(case.clip), case.baseline)  # the input CLIP is unchanged


def test_a_saved_and_loaded_map_file_encodes_bit_identically(case, clip_nodes, act_pack,
                                                             tmp_path):
    act_core = importlib.import_module(f"{act_pack.__name__}.act_core")
    path = tmp_path / "text.safetensors"
    act_core.save_maps(path, case.maps)
    loaded = act_core.load_maps(path)
    direct = _encode(clip_nodes.patch_clip(case.clip, case.maps, 1.0))
    assert _equal(_encode(clip_nodes.patch_clip(case.clip, loaded, 1.0)), direct)


def test_maps_of_another_encoder_family_are_refused_naming_both(case, clip_nodes):
    other = "WAN21_T2V" if case.family != "WAN21_T2V" else "SD15"
    clip = encoder_recipes.build_clip(other)
    maps = clip_nodes.learn_text_maps(clip, SOURCE[:2], TARGET[:2], "final norm", "",
                                      "mean_act", "unbounded")
    ours = type(case.clip.cond_stage_model).__name__
    theirs = maps.metadata["model"]["family"]
    with pytest.raises(ValueError) as error:
        clip_nodes.patch_clip(case.clip, maps, 1.0)
    assert repr(theirs) in str(error.value) and repr(ours) in str(error.value)


def _per_encoder(clip, act_core, encoders: list[str], maps=None) -> dict[str, tuple]:
    """Each encoder's own (cond, pooled) for PROMPT, with ``maps`` applied at strength 1."""
    model, tokens = clip.cond_stage_model, clip.tokenize(PROMPT)
    with contextlib.ExitStack() as stack:
        if maps is not None:
            stack.enter_context(act_core.apply_transport(model, maps, 1.0, "unbounded"))
        return {name: tuple(getattr(model, name).encode_token_weights(
                    tokens[encoder_recipes.TOKEN_KEYS.get(name, name)])[:2])
                for name in encoders}


def test_one_encoder_of_several_is_steered_alone(case, clip_nodes, act_pack):
    """Maps learned with encoder = one name sit on that encoder only; with them applied, that
    encoder's output changes and every other encoder's output is bit-identical."""
    act_core = importlib.import_module(f"{act_pack.__name__}.act_core")
    encoders = list(ENCODERS[case.family])
    if len(encoders) < 2:
        pytest.skip(f"{case.family} has one encoder")
    plain = _per_encoder(case.clip, act_core, encoders)
    for name in encoders:
        maps = clip_nodes.learn_text_maps(case.clip, SOURCE, TARGET, "layer outputs", "",
                                          "linear_act", "unbounded", encoder=name)
        assert {site.split(".", 1)[0] for site in maps} == {name}
        steered = _per_encoder(case.clip, act_core, encoders, maps)
        for other in encoders:
            same = _equal(steered[other], plain[other])
            assert same == (other != name), (name, other)
    with pytest.raises(ValueError, match="is not in this CLIP"):
        clip_nodes.learn_text_maps(case.clip, SOURCE, TARGET, "layer outputs", "",
                                   "linear_act", "unbounded", encoder="no_such_encoder")


def test_lineas_learns_on_every_encoder(case, clip_nodes, act_pack):
    """method = lineas on every encoder, under ComfyUI's inference mode as a node runs: every
    map receives a gradient through the CLIP's own encode path and the maps move the fitting
    prompts' pooled activations towards the target's (the diagnosis stored with them, summed
    over sites); the encoder's weights, their requires_grad flags and comfy_kitchen are as they
    were, no hook is left, and the maps change the encoding. Four steps at lr 0.003: the
    node's 0.01 overshoots in its first steps on the deepest tiny encoders (Mistral 3, UMT5)
    and settles by its 100 steps (docs/families.md's LinEAS column measures the defaults)."""
    import comfy_kitchen

    lineas = importlib.import_module(f"{act_pack.__name__}.act_core.lineas")
    encoder = case.clip.cond_stage_model
    kernels = {name: getattr(comfy_kitchen, name) for name in dir(comfy_kitchen)}
    weights = {n: (p.detach().clone(), p.requires_grad) for n, p in encoder.named_parameters()}
    config = lineas.LineasConfig(steps=4, batch_size=2, lr=0.003)
    with torch.inference_mode():
        maps = clip_nodes.learn_text_maps(case.clip, SOURCE, TARGET, "layer outputs", "",
                                          "lineas", "unbounded", lineas=config)
    assert list(maps) == list(case.maps)  # the sites linear_act fits
    assert maps.metadata["extra"]["lineas"]["steps"] == 4
    for site, tmap in maps.items():
        assert tmap.method == "lineas" and bool((tmap.scale != 1).any()), site
        assert torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all(), site
    assert {name: getattr(comfy_kitchen, name) for name in dir(comfy_kitchen)} == kernels
    assert not interventions(encoder)
    for name, param in encoder.named_parameters():
        torch.testing.assert_close(param, weights[name][0], rtol=0, atol=0, equal_nan=True)
        assert param.requires_grad == weights[name][1], name
    cond, _ = _encode(clip_nodes.patch_clip(case.clip, maps, 1.0))
    assert torch.isfinite(cond).all()
    assert not torch.allclose(cond, case.baseline[0], rtol=1e-3, atol=1e-3)
    report = Diagnosis.from_dict(maps.metadata["extra"]["diagnosis"])
    assert [s.site for s in report.sites] == list(maps)
    assert report.remaining < report.separation


@pytest.mark.parametrize("method", ["linear_act", "lineas"])
def test_identical_prompt_sets_warn_in_the_log_and_the_map_file(clip_nodes, method, caplog):
    """source = target: the text-encoder learn says the sets barely differ, in the log and in
    the diagnosis stored with the maps (which ``act info`` prints)."""
    clip = encoder_recipes.build_clip("SD15")
    with torch.inference_mode():
        maps = clip_nodes.learn_text_maps(clip, SOURCE, SOURCE, "layer outputs", "", method,
                                          "unbounded")
    warnings = maps.metadata["extra"]["diagnosis"]["warnings"]
    assert any("barely differ at every site" in w for w in warnings)
    assert "barely differ at every site" in caplog.text


def test_sites_auto_scores_every_preset_on_held_out_prompts(case, clip_nodes):
    """``sites = auto``: every structure preset found on the encoder is scored (held-out gap
    over the unsteered gap), the lowest is learned and recorded. Where the conditioning is read
    before the final norm (SDXL's penultimate layers), the final norm's maps cannot change it:
    that preset scores exactly 1."""
    maps = clip_nodes.learn_text_maps(case.clip, SOURCE, TARGET, "auto", "", "linear_act",
                                      "unbounded")
    auto = maps.metadata["extra"]["auto"]
    expected = set(clip_nodes.TEXT_PRESETS) - (
        {"final norm"} if case.family in encoder_recipes.NO_FINAL_NORM else set())
    assert set(auto["scores"]) == expected and auto["heldout"] == [1, 1]
    assert auto["scores"][auto["chosen"]] == min(auto["scores"].values())
    assert maps.metadata["extra"]["sites"] == auto["chosen"]
    _, sites = clip_nodes.choose_text_sites(case.clip, auto["chosen"], "", "all", SOURCE[0])
    assert sorted(maps) == sorted(str(s) for s in sites)
    # the unsteered gap, by hand: the held-out prompts' conditioning, mean over tokens
    held = [_encode(case.clip, text)[0].detach().float().mean(1)
            for text in (SOURCE[-1], TARGET[-1])]
    assert auto["baseline_gap"] == pytest.approx(float((held[0] - held[1]).pow(2).mean()),
                                                 rel=1e-5)
    if case.family == "SDXL":
        assert auto["scores"]["final norm"] == pytest.approx(1.0)


def test_the_node_learns_with_its_default_inputs_and_refuses_a_single_prompt(clip_nodes):
    """AcT Learn Text-Encoder Transport run as it is dropped into a graph (its default prompts
    and sites) learns maps; one prompt per set is refused with the fix."""
    clip = encoder_recipes.build_clip("SD15")
    node = clip_nodes.ActLearnTextTransport
    defaults = {i.id: i.default for i in node.define_schema().inputs if i.id != "clip"}
    out = node.execute(clip=clip, **defaults)
    maps = out.args[0] if hasattr(out, "args") else out[0]
    assert len(maps) > 0 and maps.metadata["extra"]["auto"]["heldout"] == [1, 1]
    with pytest.raises(ValueError, match="at least 2 source and 2 target prompts"):
        clip_nodes.learn_text_maps(clip, ["a red circle"], ["a striped red circle"], "auto", "",
                                   "linear_act", "unbounded")
