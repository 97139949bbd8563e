"""The nodes on a tiny random-weight instance of every image and video family ComfyUI loads.

Each family of ``harness/family_recipes.py`` is built with ComfyUI's own model classes, learned on
with AcT Learn Transport's default sites (``auto``: the family's preset, or the main block
stacks found by structure) and sampled through ComfyUI's sampling path. For each: strength 0
is bit-identical to the unpatched model, strength 1 changes the samples, a save/load round trip
of the map file gives bit-identical samples, maps of another family are refused with a message
naming both, and folded mode is exact wherever it does not refuse. CONDITIONING values are
seeded random tensors shaped as the family's text encoder returns them (source and target
differ by a shift of the text embedding).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from act_core.patch import interventions
from harness import family_recipes

RECIPES, build, conds = family_recipes.RECIPES, family_recipes.build, family_recipes.conds
EXCLUDED, BLOCKED = family_recipes.EXCLUDED, family_recipes.BLOCKED
pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]

STEPS, CFG, SEED = 2, 2.0, 7  # cfg != 1: both halves of the CFG batch run
FOREIGN = ("FluxSchnell", "WAN21_T2V")  # maps learned here are applied to the other families


@pytest.fixture(scope="module")
def nodes(act_pack):
    name = act_pack.__name__
    return SimpleNamespace(act_core=importlib.import_module(f"{name}.act_core"),
                           **{part: importlib.import_module(f"{name}.nodes.{part}")
                              for part in ("learn", "learn_auto", "apply", "families",
                                           "common")})


def _learn(case, nodes, sites: str = "auto"):
    return nodes.learn.learn_maps(case.model, case.source, case.target, sites=sites,
                                  support="unbounded", latent={"samples": case.latent}, seed=3,
                                  samples_per_prompt=2, incremental=False)


def _case(name: str, nodes) -> SimpleNamespace:
    recipe = RECIPES[name]
    gen = torch.Generator().manual_seed(1)
    case = SimpleNamespace(
        name=name, model=build(recipe), source=conds(recipe, 3, gen),
        target=conds(recipe, 3, gen, shift=0.5), positive=conds(recipe, 1, gen)[0],
        negative=conds(recipe, 1, gen)[0], latent=family_recipes.latent(recipe))
    case.diffusion_model = case.model.get_model_object("diffusion_model")
    case.maps = _learn(case, nodes)
    case.baseline = _sample(case.model, case)
    return case


def _sample(model, case) -> torch.Tensor:
    import comfy.sample

    noise = comfy.sample.prepare_noise(case.latent, SEED)
    return family_recipes.flat(comfy.sample.sample(
        model, noise, STEPS, CFG, "euler", "normal", case.positive, case.negative, case.latent,
        seed=SEED, disable_pbar=True))


def test_every_supported_model_is_in_the_matrix_or_has_its_reason(act_pack):
    import comfy.supported_models

    entries = [m.__name__ for m in comfy.supported_models.models]
    assert sorted(entries) == sorted([*RECIPES, *EXCLUDED, *BLOCKED])
    assert not set(RECIPES) & (set(EXCLUDED) | set(BLOCKED))


@pytest.fixture(scope="module", params=list(RECIPES))
def case(request, nodes):
    return _case(request.param, nodes)


@pytest.fixture(scope="module")
def foreign(nodes):
    return {name: _case(name, nodes).maps for name in FOREIGN}


def test_auto_learns_maps_on_every_family(case, nodes):
    assert len(case.maps) >= 2
    for site, tmap in case.maps.items():
        assert torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all(), site
        assert tmap.mode in ("tokens", "channels", "seq_first", "unbatched")
    assert not interventions(case.diffusion_model)
    assert case.maps.metadata["model"]["family"] == nodes.common.family_of(case.model)


def test_auto_chooses_by_measurement_on_every_family(case, nodes):
    """``sites = auto`` scores its candidates on held-out prompts on every family: the
    family's presets, or on families without presets the structure presets (block outputs,
    block norms, both; duplicates and presets the model has no modules for dropped). It learns
    the lowest-scoring one, and the file records every score. A family whose blocks hold no
    affine norm has one candidate (block outputs): nothing to measure, and no record."""
    auto = case.maps.metadata["extra"].get("auto")
    names = nodes.learn_auto.candidate_names(case.diffusion_model)
    if nodes.families.arch_of(case.diffusion_model) == "other":
        assert names == list(nodes.families.STRUCTURE_PRESETS)
        if auto is None:
            with pytest.raises(LookupError, match="no norms sites ran"):
                _learn(case, nodes, sites="block norms (structure)")
            return
        assert "block outputs (structure)" in auto["scores"]
    assert 2 <= len(auto["scores"]) and set(auto["scores"]) <= set(names)
    assert auto["chosen"] == min(auto["scores"], key=auto["scores"].get)
    assert auto["baseline_gap"] > 0 and all(v == v for v in auto["scores"].values())
    assert auto["heldout"] == [1, 1]


def _learn_lineas(case, nodes):
    from act_core.lineas import LineasConfig

    with torch.inference_mode():
        return nodes.learn.learn_and_diagnose(
            case.model, case.source, case.target, method="lineas", support="unbounded",
            latent={"samples": case.latent}, seed=3, samples_per_prompt=2,
            lineas=LineasConfig(steps=3, batch_size=2, lr=0.1))


def test_lineas_learns_on_every_family(case, nodes):
    """method = lineas at the default sites: every map receives a gradient through ComfyUI's
    sampling path, in-place residual adds, prompt caches, batch-1 models and comfy_kitchen's
    fused RMSNorm/RoPE kernels included; nothing is left on the model or on comfy_kitchen."""
    import comfy_kitchen

    kernels = {name: getattr(comfy_kitchen, name) for name in dir(comfy_kitchen)}
    maps, report = _learn_lineas(case, nodes)
    assert {name: getattr(comfy_kitchen, name) for name in dir(comfy_kitchen)} == kernels
    assert len(maps) >= 2 and [s.site for s in report.sites] == list(maps)
    for site, tmap in maps.items():
        assert tmap.method == "lineas" and bool((tmap.scale != 1).any()), site
        assert torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all(), site
    assert not interventions(case.diffusion_model)


def test_lineas_names_a_kernel_it_cannot_pass(nodes, monkeypatch):
    """Without the eager stand-ins, Anima's fused kernel has no backward pass: the learn says
    so, naming the kernel and the method to use instead."""
    import contextlib

    lineas = importlib.import_module(f"{nodes.learn.__package__}.learn_lineas")
    monkeypatch.setattr(lineas, "differentiable_kernels", contextlib.nullcontext)
    with pytest.raises(ValueError, match=r"no backward pass \(comfy_kitchen\.rms_rope_split_half"
                                         r"\.default\); choose linear_act"):
        _learn_lineas(_case("Anima", nodes), nodes)


def test_strength_zero_is_bit_identical(case, nodes):
    assert torch.equal(_sample(nodes.apply.patch_model(case.model, case.maps, 0.0), case),
                       case.baseline)


def test_strength_one_changes_the_samples(case, nodes):
    out = _sample(nodes.apply.patch_model(case.model, case.maps, 1.0), case)
    assert torch.isfinite(case.baseline).all() and torch.isfinite(out).all()
    assert not torch.allclose(out, case.baseline, rtol=1e-3, atol=1e-3)


def test_a_saved_and_loaded_map_file_samples_bit_identically(case, nodes, tmp_path):
    path = tmp_path / f"{case.name}.safetensors"
    nodes.act_core.save_maps(path, case.maps)
    loaded = nodes.act_core.load_maps(path)
    assert loaded.metadata["model"] == case.maps.metadata["model"]
    direct = _sample(nodes.apply.patch_model(case.model, case.maps, 1.0), case)
    assert torch.equal(_sample(nodes.apply.patch_model(case.model, loaded, 1.0), case), direct)


def test_maps_of_another_family_are_refused_naming_both(case, nodes, foreign):
    ours = nodes.common.family_of(case.model)
    maps = next(m for m in foreign.values() if m.metadata["model"]["family"] != ours)
    theirs = maps.metadata["model"]["family"]
    with pytest.raises(ValueError) as error:
        nodes.apply.patch_model(case.model, maps, 1.0)
    assert repr(theirs) in str(error.value) and repr(ours) in str(error.value)


def test_folded_mode_is_exact_wherever_it_folds(case, nodes):
    """Maps on the affine norms inside the blocks: folded into the weights, the samples equal
    the hooks' (both CFG halves, unbounded support); where folding is not exact it refuses
    and says why."""
    try:
        maps = _learn(case, nodes, sites="block norms (structure)")
    except LookupError as error:  # SiteError: no affine norm spans a block's features
        assert "no norms sites ran" in str(error)
        pytest.skip(f"{case.name}: {error}")
    try:
        folded = nodes.apply.patch_model(case.model, maps, 1.0, apply_to="both",
                                         support="unbounded", mode="folded")
    except ValueError as error:
        assert "mode 'folded' is exact only" in str(error)
        pytest.skip(f"{case.name}: not foldable: {error}")
    hooks = nodes.apply.patch_model(case.model, maps, 1.0, apply_to="both",
                                    support="unbounded")
    expected = _sample(hooks, case)
    effect = float((expected - case.baseline).abs().max())
    error = float((_sample(folded, case) - expected).abs().max())
    assert effect > 1e-3 and error <= min(1e-3, 1e-2 * effect)  # float rounding only


def test_a_model_that_caches_prompt_keys_never_mixes_steered_and_plain_runs(nodes):
    """HiDream-O1 keeps its prompt tokens' keys/values from call to call, keyed by the token
    ids only: a steered run must not leave its keys to a plain run, nor reuse a plain run's."""
    case = _case("HiDreamO1", nodes)
    assert callable(getattr(case.diffusion_model, "clear_kv_cache", None))
    fresh = build(RECIPES["HiDreamO1"])
    steered_first = _sample(nodes.apply.patch_model(fresh, case.maps, 1.0), case)
    assert torch.equal(_sample(fresh, case), case.baseline)
    steered = _sample(nodes.apply.patch_model(case.model, case.maps, 1.0), case)
    assert torch.equal(steered, steered_first)


def test_seq_first_sites_take_the_cfg_halves_their_own_strengths(nodes):
    """Cosmos 1 keeps the batch in dim -2 of its blocks: steering the conditional half only,
    the unconditional half only, or both gives three different samples (a strength applied to
    the whole batch would make 'conditional' and 'unconditional' alike)."""
    case = _case("CosmosT2V", nodes)
    assert {m.mode for m in case.maps.values()} == {"seq_first"}
    out = {half: _sample(nodes.apply.patch_model(case.model, case.maps, 1.0, apply_to=half),
                         case) for half in ("conditional", "unconditional", "both")}
    for a, b in (("conditional", "unconditional"), ("conditional", "both"),
                 ("unconditional", "both")):
        assert not torch.allclose(out[a], out[b], rtol=1e-4, atol=1e-4), (a, b)


def _first_step(model, case) -> tuple[dict, list]:
    """The conditional and unconditional predictions of the first step (the same input in every
    run) and, per model call, (batch, cond_or_uncond)."""
    from comfy.patcher_extension import WrappersMP

    predictions, calls = {}, []

    def keep(args):
        predictions.setdefault("cond", args["cond_denoised"].clone())
        predictions.setdefault("uncond", args["uncond_denoised"].clone())
        return args["denoised"]

    def layout(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        calls.append((x.shape[0], list(transformer_options["cond_or_uncond"])))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    m = model.clone()
    m.set_model_sampler_post_cfg_function(keep)
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test_layout", layout)
    _sample(m, case)
    return predictions, calls


def test_a_batch_one_model_steers_only_the_cfg_half_asked_for(nodes):
    """MiniMax H3 takes batch 1 only and its blocks carry no batch dim ('unbatched' sites):
    ComfyUI calls it once per CFG half (cond_or_uncond [0] or [1]). At the first step, steering
    the conditional half (the default) changes the conditional prediction only, the
    unconditional half the unconditional one only, both halves both."""
    case = _case("MiniMaxH3", nodes)
    assert {m.mode for m in case.maps.values()} == {"unbatched"}
    plain, calls = _first_step(case.model, case)
    assert {(b, tuple(c)) for b, c in calls} == {(1, (0,)), (1, (1,))}
    for half, changed in (("conditional", {"cond"}), ("unconditional", {"uncond"}),
                          ("both", {"cond", "uncond"})):
        steered, _ = _first_step(nodes.apply.patch_model(case.model, case.maps, 1.0,
                                                          apply_to=half), case)
        differs = {k for k in plain if not torch.equal(plain[k], steered[k])}
        assert differs == changed, half
