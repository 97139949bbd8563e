"""The nodes on tiny random-weight SDXL, Flux and SD3 built with ComfyUI's own model classes.

What a user of AcT Learn / AcT Apply relies on, checked on each architecture family: learning
gives one map per preset site with the site's width; while a patched model samples, forward
hooks sit on exactly those modules, and on none once sampling returns (also when a model call
raises or is interrupted); strength 0 gives bit-identical samples, strength 1 changes them; the
input MODEL is never changed. No weights and no text encoder are needed: CONDITIONING values are
built from seeded random tensors, as ComfyUI's text encoders would return them.
"""

from __future__ import annotations

import copy
import importlib
from collections import Counter
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from act_core.patch import interventions
from harness.tiny_families import RECIPES, build, conds, norm_sites

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_thread")]

STEPS, CFG, SEED = 3, 2.0, 7  # cfg != 1: both halves of the CFG batch run
@pytest.fixture(scope="module")
def nodes(act_pack):
    name = act_pack.__name__
    return SimpleNamespace(**{part: importlib.import_module(f"{name}.nodes.{part}")
                              for part in ("learn", "apply", "families")})


@pytest.fixture(scope="module", params=list(RECIPES))
def tiny(request, act_pack):
    recipe, patcher = build(request.param)
    model = patcher.model
    gen = torch.Generator().manual_seed(1)
    source, target = conds(recipe, 3, gen), conds(recipe, 3, gen, shift=0.5)
    (positive,), (negative,) = conds(recipe, 1, gen), conds(recipe, 1, gen)
    return SimpleNamespace(
        family=request.param, model=patcher, diffusion_model=model.diffusion_model,
        sites=recipe.sites or norm_sites(model.diffusion_model),
        source=source, target=target, positive=positive, negative=negative,
        latent=torch.zeros(1, recipe.latent_channels, 8, 8))


def _reference(tiny, nodes) -> str:
    """The family's reference preset: what ``auto`` meant before it measured."""
    families = nodes.families
    return next(iter(families.SITE_PRESETS[families.arch_of(tiny.diffusion_model)]))


@pytest.fixture(scope="module")
def maps(tiny, nodes):
    """Maps on the family's reference preset (what ``preset_patterns(arch, "auto")`` names;
    the node's ``auto`` chooses among the presets by measurement)."""
    return nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target,
                                  sites=_reference(tiny, nodes),
                                  support="unbounded", latent={"samples": tiny.latent}, seed=3)


def _sample(model, tiny) -> torch.Tensor:
    import comfy.sample

    noise = comfy.sample.prepare_noise(tiny.latent, SEED)
    return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "normal", tiny.positive,
                               tiny.negative, tiny.latent, seed=SEED, disable_pbar=True)


@pytest.fixture(scope="module")
def baseline(tiny):
    return _sample(tiny.model, tiny)


def _forward_hooks(model: nn.Module) -> Counter:
    """Hooks and patched forwards per submodule name (modules without any are left out)."""
    counts = interventions(model)
    counts.pop("", None)  # the probe's own pre-hook on the model
    return counts


def _no_hooks_left(model: nn.Module) -> bool:
    return not interventions(model)


@contextmanager
def _probe(diffusion_model: nn.Module, on_call=None):
    """At each call of the diffusion model, record the forward hooks on its modules."""
    seen: list[Counter] = []

    def look(module, args):
        seen.append(_forward_hooks(diffusion_model))
        if on_call is not None:
            on_call(len(seen))

    handle = diffusion_model.register_forward_pre_hook(look)
    try:
        yield seen
    finally:
        handle.remove()


def _hooked_modules(tiny) -> Counter:
    return Counter(site.partition(":")[0] for site in tiny.sites)


def test_learn_fits_one_map_per_preset_site(tiny, maps, nodes):
    assert {site: (m.dim, m.mode) for site, m in maps.items()} == tiny.sites
    for tmap in maps.values():
        assert torch.isfinite(tmap.scale).all() and torch.isfinite(tmap.shift).all()
    families = nodes.families
    preset = families.preset_patterns(families.arch_of(tiny.diffusion_model), "auto")
    assert {str(s) for s in families.resolve_patterns(tiny.diffusion_model, preset)} == set(maps)
    assert maps.metadata["model"]["family"] == tiny.family
    assert _no_hooks_left(tiny.diffusion_model)


def test_hooks_sit_on_the_preset_sites_only_while_the_model_runs(tiny, maps, nodes):
    patched = nodes.apply.patch_model(tiny.model, maps, 1.0)
    with _probe(tiny.diffusion_model) as seen:
        _sample(patched, tiny)
    assert len(seen) >= STEPS
    assert all(hooks == _hooked_modules(tiny) for hooks in seen)
    assert _no_hooks_left(tiny.diffusion_model)


@pytest.mark.parametrize("failure", ["interrupt", "error"])
def test_hooks_are_removed_when_a_model_call_raises(tiny, maps, nodes, baseline, failure):
    import comfy.model_management as mm

    def fail(call: int) -> None:
        if call == 2 and failure == "interrupt":
            mm.interrupt_current_processing(True)  # the model's next comfy op raises
        elif call == 2:
            raise RuntimeError("probe failure inside the model call")

    raised = mm.InterruptProcessingException if failure == "interrupt" else RuntimeError
    patched = nodes.apply.patch_model(tiny.model, maps, 1.0)
    try:
        with _probe(tiny.diffusion_model, fail) as seen, pytest.raises(raised):
            _sample(patched, tiny)
    finally:
        mm.interrupt_current_processing(False)
    assert len(seen) == 2 and seen[-1] == _hooked_modules(tiny)  # raised while hooked
    assert _no_hooks_left(tiny.diffusion_model)
    assert torch.equal(_sample(tiny.model, tiny), baseline)


def test_strength_zero_is_bit_identical(tiny, maps, nodes, baseline):
    with _probe(tiny.diffusion_model) as seen:
        out = _sample(nodes.apply.patch_model(tiny.model, maps, 0.0), tiny)
    assert torch.equal(out, baseline)
    assert seen and not any(seen)  # nothing installed at all


def test_strength_one_changes_the_samples(tiny, maps, nodes, baseline):
    out = _sample(nodes.apply.patch_model(tiny.model, maps, 1.0), tiny)
    assert torch.isfinite(baseline).all() and torch.isfinite(out).all()
    assert not torch.allclose(out, baseline, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("tiny", ["sdxl"], indirect=True)  # UNet presets
@pytest.mark.parametrize("preset, with_norms", [("norms + cross-attention outputs", True),
                                                ("cross-attention outputs", False)])
def test_the_cross_attention_presets_hook_the_attention_outputs(tiny, nodes, baseline, preset,
                                                                with_norms):
    """The UNet presets for negation (every norm plus every cross-attention output projection)
    and for a style drawn from the prompt (the cross-attention output projections only)."""
    maps = nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, sites=preset,
                                  support="unbounded", latent={"samples": tiny.latent}, seed=3)
    attn = {name: (m.out_features, "tokens")
            for name, m in tiny.diffusion_model.named_modules() if name.endswith("attn2.to_out.0")}
    expected = {**tiny.sites, **attn} if with_norms else attn
    assert attn and {site: (m.dim, m.mode) for site, m in maps.items()} == expected
    patched = nodes.apply.patch_model(tiny.model, maps, 1.0)
    with _probe(tiny.diffusion_model) as seen:
        _sample(patched, tiny)
    assert seen and all(hooks == Counter(maps.keys()) for hooks in seen)
    assert torch.equal(_sample(nodes.apply.patch_model(tiny.model, maps, 0.0), tiny), baseline)
    assert _no_hooks_left(tiny.diffusion_model)


def test_the_input_model_is_never_changed(tiny, maps, nodes, baseline):
    before = copy.deepcopy((tiny.model.model_options, tiny.model.wrappers,
                            tiny.model.object_patches, tiny.model.patches))
    patched = nodes.apply.patch_model(tiny.model, maps, 1.0, apply_to="conditional")
    _sample(patched, tiny)
    after = (tiny.model.model_options, tiny.model.wrappers, tiny.model.object_patches,
             tiny.model.patches)
    assert after == before
    assert patched is not tiny.model and patched.model is tiny.model.model  # shares weights
    assert torch.equal(_sample(tiny.model, tiny), baseline)


def test_trajectory_collection_records_each_range_on_its_own_steps(tiny, nodes):
    """collect = trajectory: each timestep range is recorded on the steps of a real (cfg 1)
    euler trajectory that fall in it: every step once over the ranges, the later range on
    inputs the earlier steps produced (so its maps differ from a range recorded on noise)."""
    steps, ranges, samples = 4, 2, 2
    calls: list[int] = []

    with _probe(tiny.diffusion_model, on_call=calls.append):
        traj = nodes.learn.learn_maps(
            tiny.model, tiny.source, tiny.target, sites=_reference(tiny, nodes),
            support="unbounded", incremental=False,
            latent={"samples": tiny.latent}, seed=3, timestep_ranges=ranges,
            collect="trajectory", trajectory_steps=steps, samples_per_prompt=samples)
    recorded = traj.metadata["extra"]["recorded_steps"]
    assert recorded[0][0] == 0 and recorded[-1][1] == steps  # every step, in order, once
    assert all(a[1] == b[0] for a, b in zip(recorded, recorded[1:], strict=False))
    # Each range's run stops after its last recorded step: 2 passes (source, target) x prompts.
    prompts = len(tiny.source) + len(tiny.target)
    assert len(calls) == prompts * sum(stop for _, stop in recorded)
    for site in tiny.sites:
        for k, (first, stop) in enumerate(recorded):
            tmap = traj[f"{site}@{k}"]
            assert tmap.n_target == len(tiny.target) * samples * (stop - first)
    noise_only = nodes.learn.learn_maps(
        tiny.model, tiny.source, tiny.target, sites=_reference(tiny, nodes),
        support="unbounded", incremental=False,
        latent={"samples": tiny.latent}, seed=3, timestep_ranges=ranges,
        samples_per_prompt=samples)
    site = next(iter(tiny.sites))
    assert not torch.equal(traj[f"{site}@1"].shift, noise_only[f"{site}@1"].shift)


def test_incremental_trajectory_maps_are_fitted_on_the_states_sampling_reaches(
        tiny, nodes, act_pack):
    """collect = trajectory, incremental: a later range is fitted on source trajectories that
    the earlier ranges' maps have already steered. So when the source prompts are sampled with
    the maps applied (AcT Apply Transport, λ = 1, the stock euler sampler, the seeds learning
    used), the first site of the last range sees exactly the activations its map was fitted
    on: the map's source min and max are what the site outputs there (before its own map)."""
    import comfy.sample

    act_core = importlib.import_module(f"{act_pack.__name__}.act_core")
    steps, samples, seed = 3, 2, 3  # 'normal' schedule: steps 0-1 in range 0, step 2 in range 1
    maps = nodes.learn.learn_maps(
        tiny.model, tiny.source, tiny.target, sites=_reference(tiny, nodes),
        support="unbounded", incremental=True,
        latent={"samples": tiny.latent}, seed=seed, timestep_ranges=2, collect="trajectory",
        trajectory_steps=steps, samples_per_prompt=samples)
    assert maps.metadata["extra"]["recorded_steps"] == [[0, 2], [2, 3]]
    latent = torch.zeros(samples, *tiny.latent.shape[1:])
    # the earlier range's maps steer steps 0-1; the last range's own maps are left off, since
    # the recorder sees a site's output after that site's transport
    patched = nodes.apply.patch_model(tiny.model, maps, 1.0, apply_to="both", end_percent=0.5)
    with act_core.record_activations(tiny.diffusion_model, list(tiny.sites)) as recorder:
        for i, cond in enumerate(tiny.source):
            noise = comfy.sample.prepare_noise(latent, seed + i)
            comfy.sample.sample(patched, noise, steps, 1.0, "euler", "normal", cond, cond,
                                latent, seed=seed + i, disable_pbar=True)
    first = recorder.order[0]
    seen = recorder.stacked()[first].reshape(len(tiny.source), steps, samples, -1)[:, 2]
    seen = seen.reshape(-1, seen.shape[-1])
    tmap = maps[f"{first}@1"]
    assert tmap.n_source == seen.shape[0]
    torch.testing.assert_close(seen.min(0).values, tmap.lo.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen.max(0).values, tmap.hi.float(), rtol=1e-4, atol=1e-5)


def test_unit_z_keeps_the_units_that_stand_out_and_gives_the_others_the_identity(tiny, nodes):
    kw = dict(sites=_reference(tiny, nodes), support="unbounded", incremental=False,
              latent={"samples": tiny.latent}, seed=3)
    full = nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, **kw)
    some = nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, unit_z=2.0, **kw)
    kept = total = 0
    for site, whole in full.items():
        part = some[site]
        keep = (part.scale != 1) | (part.shift != 0)
        assert torch.equal(part.scale[keep], whole.scale[keep])
        assert torch.equal(part.shift[keep], whole.shift[keep])
        assert bool((part.scale[~keep] == 1).all()) and bool((part.shift[~keep] == 0).all())
        kept, total = kept + int(keep.sum()), total + keep.numel()
    assert 0 < kept < total
    assert some.metadata["extra"]["unit_z"] == 2.0 and "unit_z" not in full.metadata["extra"]
    with pytest.raises(ValueError, match="sparsity"):
        nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, method="lineas",
                               unit_z=2.0, latent={"samples": tiny.latent})


def test_collect_is_checked(tiny, nodes):
    with pytest.raises(ValueError, match="collect must be one of"):
        nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, collect="everywhere",
                               latent={"samples": tiny.latent})


@pytest.mark.parametrize("tiny", ["sdxl", "sd3", "flux"], indirect=True)
def test_lineas_learns_through_comfyuis_sampling_path(tiny, nodes):
    """method = lineas: gradients reach every map through ComfyUI's own (no_grad) sampling
    path, inside the executor's inference mode (Flux too, whose blocks add to activations in
    place); the diagnosis covers every site and shows the source moved towards the target;
    nothing is left on the model."""
    from act_core.lineas import LineasConfig

    grads = [p.requires_grad for p in tiny.diffusion_model.parameters()]
    with torch.inference_mode():
        maps, report = nodes.learn.learn_and_diagnose(
            tiny.model, tiny.source, tiny.target, method="lineas", support="unbounded",
            latent={"samples": tiny.latent}, seed=3, samples_per_prompt=2,
            lineas=LineasConfig(steps=3, batch_size=2, lr=0.1))
    assert set(tiny.sites) <= set(maps)
    assert all(m.method == "lineas" for m in maps.values())
    moved = [site for site, m in maps.items() if bool((m.scale != 1).any())]
    assert len(moved) == len(maps)  # every map received a gradient
    assert [s.site for s in report.sites] == list(maps)
    # the maps move the source towards the target (Flux: through its in-place residual adds)
    assert report.remaining < report.separation
    assert maps.metadata["extra"]["diagnosis"]["sites"].keys() == maps.keys()
    assert [p.requires_grad for p in tiny.diffusion_model.parameters()] == grads
    assert _no_hooks_left(tiny.diffusion_model)
    assert "model_function_wrapper" not in tiny.model.model_options


def test_lineas_saved_copies_give_the_gradients_of_out_of_place_code(act_pack):
    """What lets LinEAS backpropagate through Flux: a block that normalises an activation (the
    norm saves it) and then adds to it in place, as ComfyUI's Flux blocks do, gets under
    ``saved_copies`` the gradients of the same block written out of place, to the bit; without
    it backpropagation refuses."""
    lineas = importlib.import_module(f"{act_pack.__name__}.nodes.learn_lineas")
    gen = torch.Generator().manual_seed(0)
    norm, proj = nn.LayerNorm(16), nn.Linear(16, 16)
    for p in (*norm.parameters(), *proj.parameters()):
        p.requires_grad_(False)
    x0 = torch.randn(2, 5, 16, generator=gen)

    def grads(in_place: bool) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.ones(16, requires_grad=True)
        shift = torch.zeros(16, requires_grad=True)
        x = torch.addcmul(shift, x0, scale)  # a map on the block's input
        y = proj(torch.sigmoid(norm(x)))
        if in_place:
            x += y
        else:
            x = x + y
        (torch.addcmul(shift, x, scale) ** 2).sum().backward()
        return scale.grad, shift.grad

    reference = grads(in_place=False)
    with pytest.raises(RuntimeError, match="inplace operation"):
        grads(in_place=True)
    with lineas.saved_copies():
        copied = grads(in_place=True)
    assert all(torch.equal(a, b) for a, b in zip(copied, reference, strict=True))


def test_auto_sites_are_the_preset_that_scores_best_on_held_out_prompts(tiny, nodes):
    """``sites = auto``: every preset of the family is scored on the held-out prompt, the
    best one is learned, and the scores are in the map file's metadata."""
    families = nodes.families
    maps = nodes.learn.learn_maps(tiny.model, tiny.source, tiny.target, sites="auto",
                                  support="unbounded", latent={"samples": tiny.latent}, seed=3,
                                  samples_per_prompt=2, incremental=False)
    auto = maps.metadata["extra"]["auto"]
    arch = families.arch_of(tiny.diffusion_model)
    assert set(auto["scores"]) <= set(families.SITE_PRESETS[arch]) and len(auto["scores"]) > 1
    assert auto["scores"][auto["chosen"]] == min(auto["scores"].values())
    assert auto["heldout"] == [1, 1] and auto["paired"] and auto["baseline_gap"] > 0
    chosen = families.resolve_patterns(tiny.diffusion_model,
                                       families.preset_patterns(arch, auto["chosen"]))
    assert {str(site) for site in chosen} == set(maps)
    assert maps.metadata["extra"]["patterns"] == list(families.preset_patterns(arch,
                                                                              auto["chosen"]))
    assert _no_hooks_left(tiny.diffusion_model)
