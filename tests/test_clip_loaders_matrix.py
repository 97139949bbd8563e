"""Every CLIP class ComfyUI's CLIP loaders build, enumerated from ComfyUI and run through the
text-encoder matrix (harness/clip_loaders.py, harness/clip_rows.py, harness/tiny_clips.py).

The enumeration runs ``comfy.sd.load_text_encoder_state_dicts`` for every loader, every type
and every encoder ``comfy.sd.detect_te_model`` knows. A CLIP class that a named row of
tests/test_text_encoders_matrix.py does not build gets a generated row here, built tiny from
the class ComfyUI chose: learn, strength 0 bit-identical, strength 1 changes the conditioning
(every tensor ComfyUI returns: cond, pooled and extras such as HiDream's Llama states),
a save/load round trip, maps of another encoder refused, and steering one encoder of several
puts maps on that one only and leaves every other encoder's output bit-identical. A loader
type, detectable encoder or CLIP class that ComfyUI adds later and that has no row and no
documented exclusion fails here.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from harness import clip_loaders, clip_rows, encoder_recipes, tiny_clips

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]

SOURCE, TARGET = encoder_recipes.MATRIX_SOURCE, encoder_recipes.MATRIX_TARGET
PROMPT = encoder_recipes.MATRIX_PROMPT


@pytest.fixture(scope="module")
def rows(act_pack):
    return clip_rows.rows()


@pytest.fixture(scope="module")
def clip_nodes(act_pack):
    return importlib.import_module(f"{act_pack.__name__}.nodes.clip")


def _generated() -> list[str]:
    """The generated rows' names, enumerated at collection time (ComfyUI imported here)."""
    from harness.comfy_env import COMFYUI_DIR, import_comfy

    if not (COMFYUI_DIR / "comfy").is_dir():
        return []  # the other tests of this module then fail naming the set-up step
    import_comfy()
    return sorted(n for n, e in clip_rows.rows().items() if e["how"] == "generated")


def pytest_generate_tests(metafunc):
    """The rows are ComfyUI's: enumerate them only when ComfyUI tests are selected (the fast
    command, -m "not comfyui ...", then imports no ComfyUI)."""
    if metafunc.function.__name__ == "test_generated_row_passes_the_matrix":
        markexpr = metafunc.config.getoption("markexpr", "") or ""
        metafunc.parametrize("name", [] if "not comfyui" in markexpr else _generated())


def test_every_encoder_comfyui_detects_has_a_stub(act_pack):
    assert clip_loaders.unstubbed_te_models() == []


def test_every_loader_type_serves_a_family_or_is_excluded(act_pack):
    offered = {t for types in clip_loaders.loader_types().values() for t in types if t}
    unknown = offered - set(clip_rows.TYPE_FAMILIES) - set(clip_rows.EXCLUDED_TYPES)
    assert not unknown, (f"ComfyUI offers CLIP loader types {sorted(unknown)} that "
                         "harness/clip_rows.py neither maps to a family nor excludes")
    assert not set(clip_rows.TYPE_FAMILIES) & set(clip_rows.EXCLUDED_TYPES)


def test_every_clip_class_the_loaders_build_is_a_row_or_documented(rows):
    named = set(clip_rows.named_row_keys().values())
    for name, entry in rows.items():
        assert entry["how"] in ("named", "generated", "gap", "excluded"), name
        assert entry["how"] != "named" or entry["row"] in named
        assert entry["how"] not in ("gap", "excluded") or entry["reason"], name
    # the audio-only types reach only excluded classes or classes that image types reach too
    for entry in rows.values():
        types = {t.type for t in entry["targets"]}
        if types <= set(clip_rows.EXCLUDED_TYPES):
            assert entry["how"] == "excluded", entry["target"].name


@pytest.mark.parametrize("name", [n for n, e in clip_rows.GAPS.items()])
def test_documented_gaps_still_fail_as_documented(rows, name):
    """A gap whose CLIP starts to build and encode must leave the list (and become a row)."""
    kind, _ = clip_rows.GAPS[name]
    entries = [e for e in rows.values() if e["how"] == "gap" and
               clip_rows.gap_of(e["key"]) == clip_rows.GAPS[name]]
    assert entries
    for entry in entries:
        with pytest.raises(Exception) as error:
            clip = tiny_clips.build_tiny(clip_loaders.target_of(entry["target"]))
            clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
        assert kind in type(error.value).__name__, (entry["target"].name, error.value)


def _encode(clip) -> list[torch.Tensor]:
    """Every tensor ComfyUI returns for PROMPT (cond, pooled, extras), in key order."""
    out = clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
    return [out[k] for k in sorted(out) if torch.is_tensor(out[k])]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def foreign(clip_nodes):
    """Maps learned on the SD1 CLIP (another encoder family for every generated row)."""
    from harness import encoder_recipes

    clip = encoder_recipes.build_clip("SD15")
    return clip_nodes.learn_text_maps(clip, SOURCE[:2], TARGET[:2], "final norm", "",
                                      "mean_act", "unbounded")


def test_generated_row_passes_the_matrix(name, rows, clip_nodes, act_pack, foreign, tmp_path):
    entry = rows[name]
    clip_target = clip_loaders.target_of(entry["target"])
    tokenizer = clip_loaders.target_key(clip_target)[1]
    if tokenizer in clip_rows.TRANSFORMERS4_TOKENIZERS:
        import transformers

        if int(transformers.__version__.split(".")[0]) >= 5:
            pytest.skip(f"{tokenizer} calls MistralConverter(vocab=...), which transformers "
                        f"{transformers.__version__} refuses; tests/test_text_encoder_"
                        "mistral3.py runs this row with transformers 4.57.6")
    clip = tiny_clips.build_tiny(clip_target)
    baseline = _encode(clip)
    maps = clip_nodes.learn_text_maps(clip, SOURCE, TARGET, "layer outputs", "", "linear_act",
                                      "unbounded")
    encoders = clip_nodes.encoders_of(clip)
    assert sorted(encoders) == maps.metadata["model"]["encoders"]
    assert {s.split(".", 1)[0] for s in maps} == set(encoders)
    assert _same(_encode(clip_nodes.patch_clip(clip, maps, 0.0)), baseline)
    steered = _encode(clip_nodes.patch_clip(clip, maps, 1.0))
    assert all(torch.isfinite(t).all() for t in steered)
    assert not all(torch.allclose(s, b, rtol=1e-3, atol=1e-3)
                   for s, b in zip(steered, baseline, strict=True))
    assert _same(_encode(clip), baseline)  # the input CLIP is unchanged
    act_core = importlib.import_module(f"{act_pack.__name__}.act_core")
    act_core.save_maps(tmp_path / "maps.safetensors", maps)
    loaded = act_core.load_maps(tmp_path / "maps.safetensors")
    assert _same(_encode(clip_nodes.patch_clip(clip, loaded, 1.0)), steered)
    with pytest.raises(ValueError) as error:
        clip_nodes.patch_clip(clip, foreign, 1.0)
    assert repr(foreign.metadata["model"]["family"]) in str(error.value)
    assert repr(type(clip.cond_stage_model).__name__) in str(error.value)
    if len(encoders) > 1:
        plain = _per_encoder(clip, act_core, encoders)
        for one in encoders:
            alone = clip_nodes.learn_text_maps(clip, SOURCE, TARGET, "layer outputs", "",
                                               "mean_act", "unbounded", encoder=one)
            assert {s.split(".", 1)[0] for s in alone} == {one}
            steered = _per_encoder(clip, act_core, encoders, alone)
            for other in encoders:
                assert _same(steered[other], plain[other]) == (other != one), (one, other)


def _per_encoder(clip, act_core, encoders: list[str], maps=None) -> dict[str, list]:
    """Each encoder's own output tensors while the whole CLIP encodes PROMPT (forward hooks on
    the encoder modules, removed in finally), with ``maps`` applied at strength 1."""
    model, outputs = clip.cond_stage_model, {name: [] for name in encoders}

    def keep(name):
        def hook(_module, _args, output):
            parts = output if isinstance(output, (tuple, list)) else (output,)
            outputs[name].extend(p.detach().clone() for p in parts if torch.is_tensor(p))
        return hook

    handles = [getattr(model, name).register_forward_hook(keep(name)) for name in encoders]
    try:
        with contextlib.ExitStack() as stack:
            if maps is not None:
                stack.enter_context(act_core.apply_transport(model, maps, 1.0, "unbounded"))
            clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
    finally:
        for handle in handles:
            handle.remove()
    assert all(outputs.values()), {n: len(o) for n, o in outputs.items()}
    return outputs
