"""``sites = auto`` in AcT Learn Transport: the site group chosen by measurement.

The candidates are the architecture's site presets (UNets, Flux, SD3), or on a model without
presets of its own the structure presets (block outputs, block norms, both: found by a probe
pass, :func:`act_core.discover.discover_sites`). The node holds out the last
prompts of each set (:func:`act_core.selection.heldout_split`), fits every candidate on the
rest with the chosen estimator, all sites from one recorded pass (every candidate's maps come
from the same two passes over the union of their sites), then samples each held-out source
prompt with the candidate's maps at strength 1 and compares the final latents with those of
the held-out target prompts on the same noise. The candidate that brings them closest wins;
the node then learns its maps from all prompts with the settings the user chose.

Sampling for the score: ``SCORE_STEPS`` euler steps on the model's 'normal' schedule, cfg 1
(the conditional prediction only, the half the maps are learned on), ``SCORE_SAMPLES`` noise
samples per held-out prompt, seeds ``seed + HELD_SEED + i`` for prompt i on both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext

import comfy.model_management
import comfy.sample
import comfy.samplers
import torch
from comfy_api.latest import IO

from ..act_core import Site, SiteError, apply_transport, fit_sites
from ..act_core.info import gate_report
from ..act_core.selection import Selection, heldout_split, score_candidates
from .chart import diagnosis_image
from .common import drop_cached_state
from .families import SITE_PRESETS, STRUCTURE_PRESETS, arch_of, choose_sites
from .learn_runs import noise_parts

__all__ = ["SCORE_SAMPLES", "SCORE_STEPS", "auto_report", "candidate_names",
           "choose_by_measurement", "diagnosis_outputs"]

log = logging.getLogger(__name__)
SCORE_STEPS = 6
SCORE_SAMPLES = 2
HELD_SEED = 60013
RunFactory = Callable[[list, int, bool], Callable]  # (conds, seed, single) -> run(recorder)


def candidate_names(diffusion_model: torch.nn.Module) -> list[str]:
    """The site presets ``auto`` chooses among on this model: the architecture's presets, or
    the structure presets on an architecture without presets (the first of them is the
    fallback when nothing can be measured)."""
    arch = arch_of(diffusion_model)
    return list(SITE_PRESETS[arch]) if arch in SITE_PRESETS else list(STRUCTURE_PRESETS)


def _candidates(diffusion_model, probe: Callable[[], None],
                probe_double: Callable[[], None] | None = None
                ) -> dict[str, tuple[list, list]]:
    found: dict[str, tuple[list, list]] = {}
    for name in candidate_names(diffusion_model):
        try:
            patterns, sites = choose_sites(diffusion_model, name, "", probe, probe_double)
        except (SiteError, ValueError) as error:  # a preset this model has no modules for
            log.debug("AcT auto: candidate %r skipped: %s", name, error)
            continue
        keys = [str(site) for site in sites]
        if sites and keys not in [[str(s) for s in other] for _, other in found.values()]:
            found[name] = (patterns, sites)
    return found


def _rows(samples) -> torch.Tensor:
    """Sampled latents as (S, E): one row per noise sample (the streams of a NestedTensor,
    as LTX-2's audio and video, flattened per sample and concatenated)."""
    parts = samples.unbind() if getattr(samples, "is_nested", False) else [samples]
    return torch.cat([t.reshape(t.shape[0], -1) for t in parts], dim=1)


def _final_latents(model, conds: list, latent, seed: int, single: bool = False
                   ) -> torch.Tensor:
    """Sample every conditioning (cfg 1, euler, SCORE_STEPS steps) on ``latent``'s noise
    samples; prompt i uses noise seed ``seed + i``; ``single``: the model takes batch 1 only,
    each noise sample runs alone. Returns (len(conds) * S, E), flattened latents."""
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", SCORE_STEPS).cpu()
    sampler = comfy.samplers.sampler_object("euler")
    diffusion_model = model.get_model_object("diffusion_model")
    out = []
    try:
        for i, cond in enumerate(conds):
            comfy.model_management.throw_exception_if_processing_interrupted()
            drop_cached_state(diffusion_model)  # steered and plain runs share no prompt cache
            noise = comfy.sample.prepare_noise(latent, seed + i)
            for part_noise, part in noise_parts(noise, latent, single):
                with torch.no_grad():
                    out.append(_rows(comfy.sample.sample_custom(
                        model, part_noise, 1.0, sampler, sigmas, cond, cond, part,
                        disable_pbar=True, seed=seed + i)))
    finally:
        drop_cached_state(diffusion_model)
    return torch.cat(out)


def choose_by_measurement(model, src_conds: list, tgt_conds: list, latent: torch.Tensor,
                          seed: int, make_run: RunFactory, probe: Callable[[], None], *,
                          method: str, support: str,
                          probe_double: Callable[[], None] | None = None
                          ) -> tuple[str, list[str], list[Site], Selection | None]:
    """(preset name, patterns, sites, selection) for ``sites = auto``.

    ``make_run(conds, seed, single)`` returns a run(recorder) that evaluates the denoiser once
    per conditioning at the learn node's recording point (``single``: one noise sample at a
    time, for a model that takes batch 1 only); ``probe`` runs one denoiser pass (for
    structure presets; ``probe_double`` the same pass with twice the batch, which finds each
    output's batch dim). With fewer than 2 prompts in a set, or one candidate, nothing can be
    held out or compared: the first candidate (the reference's choice) is returned, with no
    selection.
    """
    diffusion_model = model.get_model_object("diffusion_model")
    candidates = _candidates(diffusion_model, probe, probe_double)
    if not candidates:
        raise SiteError("sites = auto found no candidate sites on this model; choose a preset "
                        "or sites = custom with a pattern")
    first = next(iter(candidates))
    fit_s, held_s = heldout_split(len(src_conds))
    fit_t, held_t = heldout_split(len(tgt_conds))
    if not held_s or not held_t or len(candidates) == 1:
        log.info("AcT auto: %s; using %r", "one candidate" if len(candidates) == 1 else
                 "fewer than 2 prompts in a set, nothing to hold out", first)
        return first, *candidates[first], None
    union = list({str(s): s for _, sites in candidates.values() for s in sites}.values())
    single = any(site.layout == "unbatched" for site in union)  # batch 1 only: one by one
    maps = fit_sites(diffusion_model, union,
                     make_run([src_conds[i] for i in fit_s], seed, single),
                     make_run([tgt_conds[i] for i in fit_t], seed + 100003, single),
                     method=method, incremental=False)
    score_latent = latent[:SCORE_SAMPLES]
    held_seed = seed + HELD_SEED
    source = [src_conds[i] for i in held_s]
    target = _final_latents(model, [tgt_conds[i] for i in held_t], score_latent, held_seed,
                            single)

    def outputs(chosen: dict) -> torch.Tensor:
        with apply_transport(diffusion_model, chosen, 1.0, support) if chosen else nullcontext():
            return _final_latents(model, source, score_latent, held_seed, single)

    selection = score_candidates({name: sites for name, (_, sites) in candidates.items()}, maps,
                                 outputs, target, (len(held_s), len(held_t)),
                                 paired=len(held_s) == len(held_t), label="AcT auto")
    return selection.chosen, *candidates[selection.chosen], selection


def auto_report(maps, diagnosis) -> tuple[str, list[str], torch.Tensor]:
    """The learn nodes' report text, its warnings and their picture: the measured choice of
    ``sites = auto`` (when the maps' metadata records one) above the per-site diagnosis, and
    below it what the gates learned (when the maps are gated). The picture draws the diagnosis
    with the choice and the gates' line as notes and their warnings in red."""
    data = (maps.metadata.get("extra") or {}).get("auto")
    selection = Selection.from_dict(data) if data else None
    text = diagnosis.text() if selection is None else f"{selection.text()}\n\n{diagnosis.text()}"
    gates, gate_warnings = gate_report(maps)
    text += (f"\n\n{gates}" if gates else "") + "".join(f"\nWARNING: {w}" for w in gate_warnings)
    chosen = ([f"sites = auto chose {selection.chosen!r}: held-out gap "
               f"{selection.scores[selection.chosen]:.3f} of the unsteered one"]
              if selection else [])
    choice_warnings = list(selection.warnings) if selection else []
    picture = diagnosis_image(diagnosis, notes=chosen + ([gates] if gates else []),
                              warnings=choice_warnings + gate_warnings)
    return text, [*choice_warnings, *diagnosis.warnings, *gate_warnings], picture


def diagnosis_outputs() -> list:
    """The learn nodes' "did it do anything?" outputs, after their maps: the picture and the
    report text."""
    return [IO.Image.Output(display_name="diagnostics",
                            tooltip="Per site: how far apart source and target are (blue), "
                                    "what is left after the maps (orange), sites switched "
                                    "off (grey). Connect a Preview Image node."),
            IO.String.Output(display_name="report",
                             tooltip="The same per-site numbers and any warning, as text.")]
