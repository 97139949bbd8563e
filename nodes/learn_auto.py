"""``sites = auto`` in AcT Learn Transport: the site group chosen by measurement.

The candidates are the architecture's site presets (UNets, Flux, SD3); a model without
presets of its own keeps the first structure preset, unmeasured. The node holds out the last
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
from .families import SITE_PRESETS, STRUCTURE_PRESETS, arch_of, choose_sites

__all__ = ["SCORE_SAMPLES", "SCORE_STEPS", "auto_report", "candidate_names",
           "choose_by_measurement", "diagnosis_outputs"]

log = logging.getLogger(__name__)
SCORE_STEPS = 6
SCORE_SAMPLES = 2
HELD_SEED = 60013
RunFactory = Callable[[list, int], Callable]  # (conds, seed) -> run(recorder)


def candidate_names(diffusion_model: torch.nn.Module) -> list[str]:
    """The site presets ``auto`` chooses among on this model: the architecture's presets;
    on an architecture without presets only the first structure preset (one candidate, so
    nothing is measured: choosing among the structure presets is not tested on the model
    families yet)."""
    arch = arch_of(diffusion_model)
    return list(SITE_PRESETS[arch]) if arch in SITE_PRESETS else list(STRUCTURE_PRESETS)[:1]


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


def _final_latents(model, conds: list, latent: torch.Tensor, seed: int) -> torch.Tensor:
    """Sample every conditioning (cfg 1, euler, SCORE_STEPS steps) on ``latent``'s noise
    samples; prompt i uses noise seed ``seed + i``. Returns (len(conds) * S, C, h, w)."""
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", SCORE_STEPS).cpu()
    sampler = comfy.samplers.sampler_object("euler")
    out = []
    for i, cond in enumerate(conds):
        comfy.model_management.throw_exception_if_processing_interrupted()
        noise = comfy.sample.prepare_noise(latent, seed + i)
        with torch.no_grad():
            out.append(comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, cond, cond,
                                                  latent, disable_pbar=True, seed=seed + i))
    return torch.cat(out)


def choose_by_measurement(model, src_conds: list, tgt_conds: list, latent: torch.Tensor,
                          seed: int, make_run: RunFactory, probe: Callable[[], None], *,
                          method: str, support: str,
                          probe_double: Callable[[], None] | None = None
                          ) -> tuple[str, list[str], list[Site], Selection | None]:
    """(preset name, patterns, sites, selection) for ``sites = auto``.

    ``make_run(conds, seed)`` returns a run(recorder) that evaluates the denoiser once per
    conditioning at the learn node's recording point; ``probe`` runs one denoiser pass (for
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
    maps = fit_sites(diffusion_model, union, make_run([src_conds[i] for i in fit_s], seed),
                     make_run([tgt_conds[i] for i in fit_t], seed + 100003), method=method,
                     incremental=False)
    score_latent = latent[:SCORE_SAMPLES]
    held_seed = seed + HELD_SEED
    source = [src_conds[i] for i in held_s]
    target = _final_latents(model, [tgt_conds[i] for i in held_t], score_latent, held_seed)

    def outputs(chosen: dict) -> torch.Tensor:
        with apply_transport(diffusion_model, chosen, 1.0, support) if chosen else nullcontext():
            return _final_latents(model, source, score_latent, held_seed)

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
