"""Text-encoder transport: learn maps on CLIP sites and apply them to a CLIP clone.

The reference method leaves the text encoder alone; this is the project's extension for users
who want to steer the conditioning itself. Token outputs are pooled by their mean over the
encoder's full context (padding included) and transported per token. Sites are found by
structure (the encoder's stack of layers, its final norm or the norms in its layers), so every
encoder ComfyUI's CLIPLoader, DualCLIPLoader and TripleCLIPLoader build works; on a CLIP with
several encoders (SDXL's CLIP-L + CLIP-G; SD3 and Flux with T5-XXL) one, some or all of them
are steered.
"""

from __future__ import annotations

import logging

import comfy.utils
import torch
from comfy_api.latest import IO

from ..act_core import (
    MapSet,
    apply_transport,
    check_compatible,
    diagnose,
    fit_sites,
    prompt_hash,
    resolve_sites,
)
from ..act_core.block_stacks import find_block_stacks
from ..act_core.diagnose import Diagnosis
from ..act_core.discover import discover_sites
from ..act_core.errors import MapCompatibilityError
from ..act_core.lineas import LineasConfig
from ..act_core.schedule import ApplySettings
from ..act_core.selection import Selection, heldout_split, score_candidates
from ..act_core.sites import site_widths
from ..act_core.strength import MAX_STRENGTH
from .common import encode_prompt
from .learn import METHOD_CHOICES, parse_prompts
from .learn_auto import auto_report, diagnosis_outputs
from .learn_lineas import fit_lineas_clip

__all__ = ["ActApplyTransportCLIP", "ActLearnTextTransport", "TEXT_PRESETS", "TEXT_TARGET",
           "encoders_of", "learn_text_maps", "patch_clip"]

log = logging.getLogger(__name__)

TEXT_TARGET = "text_encoder"
# found by structure (act_core.discover) on every encoder ComfyUI's CLIP loaders build:
# CLIP-L/G, T5-XXL, UMT5-XXL, the language-model encoders (Llama, Qwen, Gemma, ...)
TEXT_PRESETS = {"layer outputs": "blocks", "final norm": "final_norms", "layer norms": "norms"}


def encoders_of(clip) -> list[str]:
    """The encoders of a CLIP (``clip_l``, ``clip_g``, ``t5xxl``, ``umt5xxl``, ``qwen3_4b``...):
    the sub-modules of its ``cond_stage_model`` that hold weights and a stack of repeated
    blocks (a projection beside the encoder, as LTX-2's ``text_embedding_projection``, is no
    encoder)."""
    return [name for name, module in clip.cond_stage_model.named_children()
            if next(module.parameters(), None) is not None and find_block_stacks(module)]


def _chosen_encoders(clip, encoder: str) -> list[str] | None:
    """None for every encoder ('all'); else the named ones, checked against the CLIP's."""
    names = [e.strip() for e in (encoder or "all").split(",") if e.strip()]
    if not names or names == ["all"]:
        return None
    available = encoders_of(clip)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"encoder {unknown} is not in this CLIP: it has {available}; give "
                         "'all' or a comma-separated subset of those")
    return names


def choose_text_sites(clip, sites: str, pattern: str, encoder: str, probe_prompt: str):
    """(patterns, sites) on ``clip.cond_stage_model``: a structure preset restricted to the
    chosen encoders, or custom patterns (full module paths, any encoder)."""
    model = clip.cond_stage_model
    if sites == "custom":
        patterns = [p.strip() for p in pattern.split(",") if p.strip()]
        if not patterns:
            raise ValueError("sites is 'custom' but the pattern is empty: give module-name "
                             "patterns such as 're:clip_l\\..*layers\\.\\d+'")
        return patterns, resolve_sites(model, patterns)
    if sites not in TEXT_PRESETS:
        raise ValueError(f"sites must be one of {[*TEXT_PRESETS, 'custom']}, got {sites!r}")
    chosen = discover_sites(model, lambda: encode_prompt(clip, probe_prompt), TEXT_PRESETS[sites],
                            within=_chosen_encoders(clip, encoder))
    return [str(site) for site in chosen], chosen


def auto_text_sites(clip, source: list[str], target: list[str], encoder: str, support: str
                    ) -> tuple[str, Selection]:
    """``sites = auto``: the structure preset whose maps bring held-out source prompts'
    conditioning closest to the held-out target prompts' (as AcT Learn Transport's ``auto``
    does with sampled latents, :mod:`act_core.selection`). The last third of each set (at most
    4) is held out; Linear-AcT maps for every preset's sites are fitted all at once on the
    rest; each preset's maps then encode the held-out source prompts (strength 1), and their
    conditioning, the mean over its tokens, is compared with the target prompts' as samples.
    Each set needs at least 2 prompts (:func:`learn_text_maps` checks)."""
    fit_s, held_s = heldout_split(len(source))
    fit_t, held_t = heldout_split(len(target))
    candidates = {}
    for name in TEXT_PRESETS:
        try:
            candidates[name] = choose_text_sites(clip, name, "", encoder, source[0])[1]
        except LookupError:  # e.g. no final norm (an encoder cut at an inner layer)
            log.info("AcT auto (text encoder): no %s sites on this CLIP", name)
    union = list({str(s): s for sites in candidates.values() for s in sites}.values())
    pbar = comfy.utils.ProgressBar(len(fit_s) + len(fit_t) + len(held_t)
                                   + len(held_s) * (len(candidates) + 1))  # every encode

    def run(prompts: list[str]):
        def runner(recorder) -> None:
            for prompt in prompts:
                encode_prompt(clip, prompt)
                pbar.update(1)
        return runner

    maps = fit_sites(clip.cond_stage_model, union, run([source[i] for i in fit_s]),
                     run([target[i] for i in fit_t]), incremental=False)

    def conditioning(prompts: list[str], chosen: dict) -> torch.Tensor:  # (N, D)
        rows = []
        with apply_transport(clip.cond_stage_model, chosen, 1.0, support):
            for prompt in prompts:
                rows.append(encode_prompt(clip, prompt).float().mean(1).cpu())
                pbar.update(1)
        return torch.cat(rows)

    held_source = [source[i] for i in held_s]
    reference = conditioning([target[i] for i in held_t], {})
    selection = score_candidates(candidates, maps,
                                 lambda chosen: conditioning(held_source, chosen), reference,
                                 (len(held_s), len(held_t)), paired=False,
                                 label="AcT auto (text encoder)")
    return selection.chosen, selection


#: LinEAS's settings on a text encoder: a transformer stack, as SmolLM2's, where the denoiser's
#: rate (0.1) threw the residual stream off; at 100 steps, 0.01 closes more of the separation
#: than 0.003 on every tiny encoder of docs/families.md (0.05 diverges on two)
TEXT_LINEAS = LineasConfig(steps=100, batch_size=4, lr=0.01)


def learn_text_maps(clip, source: list[str], target: list[str], sites: str, pattern: str,
                    method: str, support: str, encoder: str = "all",
                    lineas: LineasConfig | None = None) -> MapSet:
    """Maps for the chosen sites of ``clip``'s encoder(s). ``method = "lineas"`` learns every
    site jointly, end to end (settings in ``lineas``, default :data:`TEXT_LINEAS`)."""
    encoder_model = clip.cond_stage_model
    if len(source) < 2 or len(target) < 2:  # one prompt is one sample of each site
        raise ValueError("the text encoder needs at least 2 source and 2 target prompts (one "
                         "per line): each prompt gives one sample per site; found "
                         f"{len(source)} and {len(target)}")
    selection = None
    if sites == "auto":
        sites, selection = auto_text_sites(clip, source, target, encoder, support)
    patterns, chosen = choose_text_sites(clip, sites, pattern, encoder, source[0])
    if method == "lineas":
        config = lineas or TEXT_LINEAS
        fit = fit_lineas_clip(clip, chosen, source, target, config,
                              comfy.utils.ProgressBar(config.steps + 3))
        maps, found, extra = fit.maps, vars(fit), {"lineas": vars(config)}
    else:
        pbar = comfy.utils.ProgressBar(len(source) + len(target))

        def runner(prompts):
            def run(recorder) -> None:
                for p in prompts:
                    encode_prompt(clip, p)
                    pbar.update(1)
            return run

        found, extra = {}, {}
        maps = fit_sites(encoder_model, chosen, runner(source), runner(target), method=method,
                         incremental=False, samples=found)
    diagnosis = diagnose(found["source"], found["target"], maps, found.get("transported"))
    for warning in [*(selection.warnings if selection else ()), *diagnosis.warnings]:
        log.warning("AcT Learn Text-Encoder Transport: %s", warning)
    metadata = {"model": {"family": type(encoder_model).__name__, "target": TEXT_TARGET,
                          "encoders": sorted({str(s).split(".", 1)[0] for s in chosen})},
                "prompt_hash": prompt_hash(source, target), "support": support,
                "method": method, "extra": {"sites": sites, "patterns": patterns,
                                            "encoder": encoder, **extra,
                                            "diagnosis": diagnosis.as_dict(),
                                            **({"auto": selection.as_dict()}
                                               if selection else {})}}
    return MapSet(maps, metadata)


def validate_text_maps(clip, maps: MapSet) -> None:
    """MapCompatibilityError naming both encoder families, missing sites or widths."""
    model = clip.cond_stage_model
    check_compatible(maps, site_widths(model, maps, maps), type(model).__name__)


def patch_clip(clip, maps: MapSet, strength: float):
    """A clone of ``clip`` whose encodings are transported (clones of it stay patched)."""
    if (maps.metadata.get("model") or {}).get("target") != TEXT_TARGET:
        raise ValueError("these maps were learned on the diffusion model, not the text "
                         "encoder: use AcT Apply Transport on the MODEL instead")
    settings = ApplySettings.checked(maps, strength)  # the whole encoding, both prompts
    try:
        validate_text_maps(clip, maps)
    except MapCompatibilityError as error:
        raise ValueError(f"AcT Apply Transport (CLIP): {error}") from error
    support = maps.support
    patched = clip.clone()
    encode, clone = patched.encode_from_tokens, patched.clone

    def encode_from_tokens(*args, **kwargs):
        with apply_transport(patched.cond_stage_model, maps, settings.strength, support):
            return encode(*args, **kwargs)

    def clone_patched(*args, **kwargs):
        return patch_clip(clone(*args, **kwargs), maps, settings.strength)

    patched.encode_from_tokens = encode_from_tokens
    patched.clone = clone_patched
    return patched


class ActLearnTextTransport(IO.ComfyNode):
    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActLearnTextTransport",
            display_name="AcT Learn Text-Encoder Transport",
            category="AcT",
            description=("Learns transport maps on the text encoder (CLIP) from a source and a "
                         "target prompt set. Apply them with AcT Apply Transport (CLIP)."),
            search_aliases=["act clip", "text encoder transport", "conditioning steer"],
            inputs=[
                IO.Clip.Input("clip", tooltip="The text encoder to learn maps for."),
                IO.String.Input("source_prompts", multiline=True,
                                default="a red circle\na blue square\na green triangle",
                                tooltip="One prompt per line (at least 2): what the model "
                                        "makes now."),
                IO.String.Input("target_prompts", multiline=True,
                                default="a striped red circle\na striped blue square\n"
                                        "a striped green triangle",
                                tooltip="One prompt per line (at least 2): what you want "
                                        "instead."),
                IO.Combo.Input("sites", options=["auto", *TEXT_PRESETS, "custom"],
                               default="auto",
                               tooltip="Where to intervene in the text encoder, found by "
                                       "structure: the output of every layer, the final "
                                       "norm, or the norms inside the layers; auto: each "
                                       "of those scored on held-out prompts by how close "
                                       "its maps bring their conditioning to the target's, "
                                       "the best learned (the report lists the scores; the "
                                       "default: on the toy world it kept the images where "
                                       "layer outputs broke them)."),
                IO.String.Input("pattern", default="", advanced=True,
                                tooltip="For sites = custom: comma-separated module-name "
                                        "globs or 're:' regexes."),
                IO.Combo.Input("method", options=METHOD_CHOICES, default="linear_act",
                               tooltip="Estimator (linear_act is the paper's default); "
                                       "lineas learns every site jointly, end to end "
                                       "(LinEAS), so each map accounts for the maps before "
                                       "it."),
                IO.Combo.Input("support", options=["unbounded", "minmax"], default="unbounded",
                               tooltip="Recorded default support for applying."),
                IO.String.Input("encoder", default="all", optional=True,
                                tooltip="Which encoder(s) of the CLIP to steer: 'all', or "
                                        "names such as clip_l, clip_g, t5xxl (comma-"
                                        "separated); an unknown name lists the CLIP's."),
                IO.Int.Input("lineas_steps", default=TEXT_LINEAS.steps, min=1, max=100000,
                             optional=True, advanced=True,
                             tooltip="For lineas: optimisation steps (one batch of source "
                                     "prompts through the encoder, forward and backward)."),
                IO.Float.Input("lineas_lr", default=TEXT_LINEAS.lr, min=0.0001, max=10.0,
                               step=0.001, optional=True, advanced=True,
                               tooltip="For lineas: Adam learning rate (scale change and "
                                       "shift in target standard deviations per step)."),
            ],
            outputs=[IO.Custom("ACT_MAPS").Output(display_name="maps",
                                                  tooltip="Maps for the text encoder."),
                     *diagnosis_outputs()],
        )

    @classmethod
    def execute(cls, clip, source_prompts, target_prompts, sites, pattern, method,
                support, encoder="all", lineas_steps=TEXT_LINEAS.steps,
                lineas_lr=TEXT_LINEAS.lr) -> IO.NodeOutput:
        source = parse_prompts(source_prompts, "source_prompts")
        target = parse_prompts(target_prompts, "target_prompts")
        config = LineasConfig(steps=lineas_steps, batch_size=TEXT_LINEAS.batch_size,
                              lr=lineas_lr)
        maps = learn_text_maps(clip, source, target, sites, pattern, method, support, encoder,
                               lineas=config)
        diagnosis = Diagnosis.from_dict(maps.metadata["extra"]["diagnosis"])
        report, _, picture = auto_report(maps, diagnosis)  # the learn logged the warnings
        return IO.NodeOutput(maps, picture, report, ui={"text": (report,)})


class ActApplyTransportCLIP(IO.ComfyNode):
    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActApplyTransportCLIP",
            display_name="AcT Apply Transport (CLIP)",
            category="AcT",
            description=("Patches a copy of the CLIP so that its encodings are transported with "
                         "strength lambda, using maps from AcT Learn Text-Encoder Transport."),
            search_aliases=["act clip apply", "text encoder steer"],
            inputs=[
                IO.Clip.Input("clip", tooltip="The text encoder (cloned, never changed)."),
                IO.Custom("ACT_MAPS").Input("maps", tooltip="Text-encoder maps."),
                IO.Float.Input("strength", default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05,
                               tooltip="Lambda: 0 = unchanged, 1 = like the target prompts."),
            ],
            outputs=[IO.Clip.Output(tooltip="The patched copy of the CLIP.")],
        )

    @classmethod
    def execute(cls, clip, maps, strength) -> IO.NodeOutput:
        return IO.NodeOutput(patch_clip(clip, maps, strength))
