"""ActLearnTransport: record the denoiser on two prompt sets and fit one map per site.

Each prompt is encoded with the CLIP input, then the model's denoiser is run ONCE on a
seeded noise latent at the chosen point of the schedule, through ComfyUI's own sampling path
(so every conditioning, patch and earlier AcT node applies) with cfg 1, i.e. the conditional
half only. act_core records the pooled site outputs and fits the maps.
"""

from __future__ import annotations

import dataclasses
import logging

import comfy.utils
from comfy_api.latest import IO

from ..act_core import ESTIMATORS, MapSet, fit_sites, prompt_hash
from ..act_core.diagnose import Diagnosis, diagnose
from ..act_core.gate import DEFAULT_RAMP, LEARN_GATES, gate_maps, learn_gate
from ..act_core.lineas import LineasConfig
from ..act_core.trajectory import Trajectory
from ..act_core.units import check_unit_method
from . import memo
from .common import family_of
from .families import (
    SITE_PRESETS,
    arch_of,
    choose_sites,
    preset_names,
    resolve_patterns,
)
from .learn_auto import auto_report, choose_by_measurement, diagnosis_outputs
from .learn_lineas import fit_lineas_comfy, lineas_candidates, lineas_structure_sites
from .learn_runs import (
    COLLECT,
    NO_PROGRESS,
    collect_sigma,
    doubled_probe,
    empty_latent,
    range_steps,
    runner,
)
from .schedule import bucket_key

__all__ = ["ActLearnTransport", "encode_prompts", "learn_maps", "parse_prompts"]

log = logging.getLogger(__name__)
SITE_CHOICES = ["auto", *preset_names(), "custom"]
SUPPORT_CHOICES = ["minmax", "unbounded", "q0.01-0.99", "q0.05-0.95"]
METHOD_CHOICES = [*ESTIMATORS, "lineas"]
#: LinEAS's settings on a denoiser when none are given: AcT Learn Transport's input defaults,
#: which :func:`learn_and_diagnose` also uses (the seed comes from the learn's own)
NODE_LINEAS = LineasConfig(steps=60, batch_size=4, lr=0.1)


def parse_prompts(text: str, which: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    prompts = [line.strip() for line in (text or "").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{which} is empty: write one prompt per line (both sets are needed; "
                         "source = what the model does now, target = what you want)")
    return prompts


def encode_prompts(clip, prompts: list[str]) -> list:
    """CLIPTextEncode, prompt by prompt: a list of CONDITIONING values."""
    return [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in prompts]


def learn_maps(model, src_conds: list, tgt_conds: list, *, source: list[str] | None = None,
               target: list[str] | None = None, sites: str = "auto",
               pattern: str = "", method: str = "linear_act", support: str = "minmax",
               incremental: bool = True, stages: int = 8, collect_at: float = 0.0,
               timestep_ranges: int = 1, seed: int = 0, latent: dict | None = None,
               samples_per_prompt: int = 8, collect: str = "first step",
               trajectory_steps: int = 10, paired_noise: bool = False,
               lineas: LineasConfig | None = None, gate: bool | str = False,
               unit_z: float = 0.0) -> MapSet:
    """Fit maps for ``model`` from two lists of CONDITIONING; returns a MapSet.

    ``source``/``target`` are the prompt texts (for the hash in the metadata), when known.
    ``collect``: ``"first step"`` evaluates the denoiser once per prompt and range, on seeded
    noise at ``collect_at`` (or the range's middle); ``"trajectory"`` samples each prompt along
    a ``trajectory_steps``-step euler schedule (cfg 1) and records every step that falls in the
    range, so later ranges see partly formed images, as they do when sampling. With
    ``incremental``, the source trajectories of a range are sampled with the maps of the earlier
    ranges applied on their steps, and a range's own earlier stages only on its steps.
    ``paired_noise``: target prompt i gets the same noise seed as source prompt i (by default
    the target seeds are offset, so the two sets see independent noise).
    ``method = "lineas"`` learns every site jointly (:mod:`act_core.lineas`, settings in
    ``lineas``; first-step collection only). The per-site diagnosis is stored in the metadata
    (``extra.diagnosis``); :func:`learn_and_diagnose` also returns it.
    """
    return learn_and_diagnose(
        model, src_conds, tgt_conds, source=source, target=target, sites=sites,
        pattern=pattern, method=method, support=support, incremental=incremental,
        stages=stages, collect_at=collect_at, timestep_ranges=timestep_ranges, seed=seed,
        latent=latent, samples_per_prompt=samples_per_prompt, collect=collect,
        trajectory_steps=trajectory_steps, paired_noise=paired_noise, lineas=lineas,
        gate=gate, unit_z=unit_z)[0]


def learn_and_diagnose(model, src_conds: list, tgt_conds: list, *, source=None, target=None,
                       sites: str = "auto", pattern: str = "", method: str = "linear_act",
                       support: str = "minmax", incremental: bool = True, stages: int = 8,
                       collect_at: float = 0.0, timestep_ranges: int = 1, seed: int = 0,
                       latent: dict | None = None, samples_per_prompt: int = 8,
                       collect: str = "first step", trajectory_steps: int = 10,
                       paired_noise: bool = False, lineas: LineasConfig | None = None,
                       gate: bool | str = False, unit_z: float = 0.0
                       ) -> tuple[MapSet, Diagnosis]:
    """:func:`learn_maps`, returning the maps and their :class:`~act_core.diagnose.Diagnosis`."""
    if len(src_conds) == 0 or len(tgt_conds) == 0:
        raise ValueError("need at least one source and one target conditioning")
    if collect not in COLLECT:
        raise ValueError(f"collect must be one of {COLLECT}, got {collect!r}")
    if collect == "trajectory" and not 1 <= trajectory_steps <= 1000:
        raise ValueError(f"trajectory_steps must be in [1, 1000], got {trajectory_steps}")
    check_unit_method(unit_z, method)
    if method == "lineas" and collect != "first step":
        raise ValueError("method lineas learns from one denoiser evaluation per prompt: set "
                         "collect to 'first step' (or choose another method for trajectory)")
    diffusion_model = model.get_model_object("diffusion_model")
    arch = arch_of(diffusion_model)
    lat = empty_latent(model, latent, samples_per_prompt)
    sampling = model.get_model_object("model_sampling")
    # structure presets look at one denoiser pass (first source prompt, one noise sample)
    probe = runner(model, src_conds[:1], lat[:1], seed, collect_sigma(sampling, 0.0),
                   NO_PROGRESS)
    # the same pass with twice the batch: the dim that doubles is each output's batch dim
    # (a model that takes batch 1 only refuses it: its sites are then 'unbatched')
    probe_double = doubled_probe(model, src_conds[:1], lat[:1], seed,
                                 collect_sigma(sampling, 0.0))
    selection = None
    if sites == "auto" and method == "lineas" and SITE_PRESETS.get(arch):
        patterns = lineas_candidates(arch)
        chosen = resolve_patterns(diffusion_model, patterns)
    elif sites == "auto" and method == "lineas":  # no presets: block outputs and norms at once
        patterns, chosen = lineas_structure_sites(diffusion_model, lambda: probe(None),
                                                  probe_double)
    elif sites == "auto":  # chosen by measurement on held-out prompts (nodes/learn_auto.py)
        at = collect_sigma(sampling, collect_at if timestep_ranges == 1 else 0.0)
        _, patterns, chosen, selection = choose_by_measurement(
            model, src_conds, tgt_conds, lat, seed,
            lambda conds, s, single: runner(model, conds, lat, s, at, NO_PROGRESS,
                                            single=single),
            lambda: probe(None), method=method, support=support,
            probe_double=probe_double)
    else:
        patterns, chosen = choose_sites(diffusion_model, sites, pattern, lambda: probe(None),
                                        probe_double)
    single = any(site.layout == "unbatched" for site in chosen)  # batch 1 only: one by one
    passes = (1 + (len(chosen) if stages <= 0 else min(stages, len(chosen)))) if incremental else 2
    per_pass = {"target": len(tgt_conds), "source": len(src_conds)}
    total = per_pass["target"] + (passes - 1) * per_pass["source"]
    if method == "lineas":
        lineas = lineas or dataclasses.replace(NODE_LINEAS, seed=seed)
        total = lineas.steps + 3  # fit_lineas reports every step
    pbar = comfy.utils.ProgressBar(timestep_ranges * total)
    maps: dict = {}
    buckets = [(k / timestep_ranges, (k + 1) / timestep_ranges) for k in range(timestep_ranges)]
    recorded_steps = []
    samples: dict = {"source": {}, "target": {}, "transported": {}}
    earlier: list = []  # (maps, steps) of the ranges fitted so far, with collect = trajectory
    for k, (lo, hi) in enumerate(buckets):
        percent = collect_at if timestep_ranges == 1 else (lo + hi) / 2
        sigma = collect_sigma(sampling, percent)
        trajectory = (range_steps(sampling, trajectory_steps, k, timestep_ranges)
                      if collect == "trajectory" else None)
        if trajectory is not None:
            recorded_steps.append(list(trajectory[1]))
        box = Trajectory()
        run_source = runner(model, src_conds, lat, seed, sigma, pbar, trajectory, box, single)
        tgt_seed = seed if paired_noise else seed + 100003
        run_target = runner(model, tgt_conds, lat, tgt_seed, sigma, pbar, trajectory, box,
                            single)
        strength = 1.0
        if trajectory is not None and incremental:
            strength = box.during(trajectory[1])
            run_source = box.steered(diffusion_model, run_source, earlier, support)
        if method == "lineas":
            result = fit_lineas_comfy(model, chosen, src_conds, tgt_conds, lat, seed, sigma,
                                      pbar, lineas, tgt_seed, single)
            fitted, found = result.maps, vars(result)
        else:
            found = {}
            fitted = fit_sites(diffusion_model, chosen, run_source, run_target,
                               method=method, incremental=incremental,
                               stages=None if stages <= 0 else stages,
                               support_for_incremental=support,
                               strength_for_incremental=strength, samples=found,
                               unit_z=unit_z)
        for part in samples:
            samples[part].update({bucket_key(site, k, timestep_ranges): value
                                  for site, value in (found.get(part) or {}).items()})
        if trajectory is not None:
            earlier.append((fitted, trajectory[1]))
        maps.update({bucket_key(site, k, timestep_ranges): m for site, m in fitted.items()})
    diagnosis = diagnose(samples["source"], samples["target"], maps,
                         samples["transported"] or None)
    if gate:  # one gate per site and range, from the same pooled samples: no extra pass
        maps = gate_maps(maps, samples["source"], samples["target"], pooling="item",
                         ramp=gate if isinstance(gate, str) else DEFAULT_RAMP)
    metadata = {
        "model": {"family": family_of(model), "arch": type(diffusion_model).__name__,
                  "config": type(model.model.model_config).__name__, "target": "diffusion_model"},
        "prompt_hash": prompt_hash(source, target) if source and target else None,
        "support": support, "method": method,
        "extra": {"buckets": [list(b) for b in buckets], "collect_at": collect_at,
                  "collect": collect,
                  **({"trajectory_steps": trajectory_steps, "recorded_steps": recorded_steps}
                     if collect == "trajectory" else {}),
                  "sites": sites, "patterns": patterns, "incremental": incremental,
                  "gate": "learned" if gate else "off",
                  **({"gate_ramp": gate if isinstance(gate, str) else DEFAULT_RAMP}
                     if gate else {}),
                  "stages": stages, "seed": seed, "latent_shape": list(lat.shape),
                  **({"unit_z": unit_z} if unit_z else {}),
                  "source_prompts": len(src_conds), "target_prompts": len(tgt_conds),
                  **({"lineas": vars(lineas)}
                     if method == "lineas" else {}),
                  **({"auto": selection.as_dict()} if selection is not None else {}),
                  "diagnosis": diagnosis.as_dict()},
    }
    return MapSet(maps, metadata), diagnosis


class ActLearnTransport(IO.ComfyNode):
    """Learn transport maps from a source and a target prompt set."""

    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActLearnTransport",
            display_name="AcT Learn Transport",
            category="AcT",
            description=("Learns how the model's activations differ between two prompt sets and "
                         "fits one small optimal-transport map per unit (Activation Transport). "
                         "Source = prompts as the model draws them now (e.g. 'a red circle'); "
                         "target = the same prompts with what you want (e.g. 'a striped red "
                         "circle'), or without what you want gone. Feed the maps to AcT Apply "
                         "Transport. Takes one denoiser pass per prompt and fitting stage."),
            search_aliases=["activation transport", "learn concept", "fit maps", "steering",
                            "style slider", "concept negation"],
            inputs=[
                IO.Model.Input("model", tooltip="The model to learn maps for."),
                IO.Clip.Input("clip", tooltip="Encodes the prompts (the checkpoint's CLIP)."),
                IO.String.Input("source_prompts", multiline=True,
                                default="a red circle\na blue square\na green triangle",
                                tooltip="One prompt per line: what the model makes now."),
                IO.String.Input("target_prompts", multiline=True,
                                default="a striped red circle\na striped blue square\n"
                                        "a striped green triangle",
                                tooltip="One prompt per line: what you want instead. "
                                        "The sets may differ in size."),
                IO.Combo.Input("sites", options=SITE_CHOICES, default="auto",
                               tooltip="Where to intervene. auto = chosen by measurement "
                                       "on your prompts: the last third of each set (up to "
                                       "4) is held out, every preset of the model is fitted "
                                       "on the rest and sampled on the held-out prompts, and "
                                       "the preset whose result comes closest to the "
                                       "target's is learned from all prompts (the report "
                                       "shows the scores; with method lineas: every "
                                       "preset's sites at once). On a UNet, 'cross-attention "
                                       "outputs' (where the prompt enters) adds a style the "
                                       "model draws from the whole prompt, and 'norms + "
                                       "cross-attention outputs' removes something the "
                                       "prompts name. '(structure)' presets find the main "
                                       "stacks of repeated blocks on any model; auto chooses "
                                       "among them on a model without presets. custom = the "
                                       "pattern below."),
                IO.String.Input("pattern", default="", advanced=True,
                                tooltip="For sites = custom: comma-separated module-name "
                                        "globs or 're:' regexes, optionally ':index' for "
                                        "tuple outputs."),
                IO.Combo.Input("method", options=METHOD_CHOICES, default="linear_act",
                               tooltip="Estimator: linear_act (the paper's default), "
                                       "mean_act, gaussian_ot, aura, diff_means (an "
                                       "unbounded steering vector, for comparison), or "
                                       "lineas (every site learned jointly, end to end, "
                                       "through the model; with sites = auto it chooses "
                                       "among all preset sites itself)."),
                IO.Combo.Input("support", options=SUPPORT_CHOICES, default="unbounded",
                               tooltip="Recorded default for applying: 'unbounded' to add a "
                                       "style or concept, 'minmax' to remove one."),
                IO.Boolean.Input("incremental", default=True, advanced=True,
                                 tooltip="Fit sites in forward order with earlier maps applied "
                                         "(the paper's default); off = all sites from one "
                                         "pass, faster."),
                IO.Int.Input("stages", default=8, min=0, max=4096, advanced=True,
                             tooltip="Incremental fitting in this many groups of sites "
                                     "(one extra pass over the source prompts each); 0 = one "
                                     "group per site, as in the paper."),
                IO.Float.Input("collect_at", default=0.0, min=0.0, max=1.0, step=0.01,
                               advanced=True,
                               tooltip="Point of the sampling schedule to record at "
                                       "(0 = the noisiest step, the paper's choice)."),
                IO.Int.Input("timestep_ranges", default=1, min=1, max=10, advanced=True,
                             tooltip="1 = one map for every step; N = N maps, each learned at "
                                     "the middle of its part of the schedule and applied "
                                     "there."),
                IO.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Noise seed of the first prompt (prompt i uses seed + i)."),
                IO.Latent.Input("latent", optional=True,
                                tooltip="Latent size to record at (connect the one you sample "
                                        "with; its batch size is not used); without it the "
                                        "family's usual size is used."),
                IO.Int.Input("samples_per_prompt", default=8, min=2, max=256, optional=True,
                             advanced=True,
                             tooltip="Noise samples recorded per prompt. The maps are fitted "
                                     "on prompts x samples values per unit; with a handful of "
                                     "prompts, fewer than 8 give noisy maps."),
                IO.Combo.Input("collect", options=list(COLLECT), default="first step",
                               optional=True, advanced=True,
                               tooltip="first step = one denoiser pass per prompt on seeded "
                                       "noise (fast, the paper's choice); trajectory = sample "
                                       "each prompt and record the steps the sampler really "
                                       "visits (trajectory_steps passes per prompt)."),
                IO.Int.Input("trajectory_steps", default=10, min=1, max=1000, optional=True,
                             advanced=True,
                             tooltip="For collect = trajectory: euler steps of the recorded "
                                     "sampling run."),
                IO.Int.Input("lineas_steps", default=NODE_LINEAS.steps, min=1, max=100000,
                             optional=True, advanced=True,
                             tooltip="For lineas: optimisation steps (one batch of source "
                                     "prompts through the model, forward and backward)."),
                IO.Int.Input("lineas_batch", default=NODE_LINEAS.batch_size, min=1, max=1024,
                             optional=True, advanced=True,
                             tooltip="For lineas: source prompts per step (memory grows "
                                     "with it: prompts x samples_per_prompt latents)."),
                IO.Float.Input("lineas_lr", default=NODE_LINEAS.lr, min=0.0001, max=10.0,
                               step=0.01, optional=True, advanced=True,
                               tooltip="For lineas: Adam learning rate (scale change and "
                                       "shift in target standard deviations per step)."),
                IO.Float.Input("sparsity", default=0.0, min=0.0, max=10.0, step=0.05,
                               optional=True, advanced=True,
                               tooltip="For lineas: switches off sites that are not needed "
                                       "(group penalty; 0 = keep all). The diagnostics show "
                                       "which sites were kept."),
                IO.Combo.Input("gate", options=list(LEARN_GATES), default="off", optional=True,
                               tooltip="learned: also learn, per site, a gate from the same "
                                       "recordings (no extra pass) that says how much each "
                                       "image looks like the source prompts; AcT Apply "
                                       "Transport then scales the strength by it, so images "
                                       "without the concept are left as they are. Gated "
                                       "maps cannot be folded or exported as a LoRA. "
                                       "The ramp: learned balanced runs between the two "
                                       "classes' medians, learned strict leaves every "
                                       "training target image at gate 0; learned = "
                                       f"{DEFAULT_RAMP}. The report says how well the gates "
                                       "tell the prompt sets apart on recordings held out."),
            ],
            outputs=[IO.Custom("ACT_MAPS").Output(display_name="maps",
                                                  tooltip="The fitted transport maps."),
                     *diagnosis_outputs()],
        )

    @classmethod
    def execute(cls, model, clip, source_prompts, target_prompts, sites, pattern, method,
                support, incremental, stages, collect_at, timestep_ranges, seed,
                latent=None, samples_per_prompt=8, collect="first step",
                trajectory_steps=10, lineas_steps=NODE_LINEAS.steps,
                lineas_batch=NODE_LINEAS.batch_size, lineas_lr=NODE_LINEAS.lr,
                sparsity=0.0, gate="off") -> IO.NodeOutput:
        source = parse_prompts(source_prompts, "source_prompts")
        target = parse_prompts(target_prompts, "target_prompts")
        src_conds, tgt_conds = encode_prompts(clip, source), encode_prompts(clip, target)
        settings = dict(source=source, target=target, sites=sites, pattern=pattern,
                        method=method, support=support, incremental=incremental,
                        stages=stages, collect_at=collect_at, timestep_ranges=timestep_ranges,
                        seed=seed, samples_per_prompt=samples_per_prompt, collect=collect,
                        trajectory_steps=trajectory_steps, gate=learn_gate(gate))
        config = LineasConfig(steps=lineas_steps, batch_size=lineas_batch, lr=lineas_lr,
                              group=sparsity, seed=seed)
        key = memo.fingerprint(model, (src_conds, tgt_conds),
                               {**settings, "lineas": repr(config), "latent": None
                                if latent is None else list(latent["samples"].shape)})
        kept = memo.recall(key)
        if kept is not None:
            maps, diagnosis = kept
            log.info("AcT: reusing the %d maps learned earlier in this process from the same "
                     "model, prompts and settings (ComfyUI had dropped its cached copy)",
                     len(maps))
        else:
            maps, diagnosis = learn_and_diagnose(model, src_conds, tgt_conds, latent=latent,
                                                 lineas=config, **settings)
            memo.remember(key, (maps, diagnosis))
        report, warnings, picture = auto_report(maps, diagnosis)
        if kept is None:
            log.info("AcT: learned %d maps (%s, %d source / %d target prompts)\n%s", len(maps),
                     method, len(source), len(target), report)
            for warning in warnings:
                log.warning("AcT Learn Transport: %s", warning)
        return IO.NodeOutput(maps, picture, report, ui={"text": (report,)})
