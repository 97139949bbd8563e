"""Text-encoder transport: learn maps on CLIP sites and apply them to a CLIP clone.

The reference method leaves the text encoder alone; this is the project's extension for users
who want to steer the conditioning itself. Token outputs are pooled by their mean over the
encoder's full context (padding included) and transported per token.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import IO

from ..act_core import ESTIMATORS, MapSet, apply_transport, fit_sites, prompt_hash, resolve_sites
from .common import check_strength_range
from .learn import parse_prompts

__all__ = ["ActApplyTransportCLIP", "ActLearnTextTransport", "patch_clip", "TEXT_TARGET"]

TEXT_TARGET = "text_encoder"
TEXT_PRESETS = {
    "final norm": (r"re:.*final_layer_norm",),
    "layer outputs": (r"re:.*encoder\.layers\.\d+",),
}


def _encode(clip, prompt: str) -> None:
    clip.encode_from_tokens(clip.tokenize(prompt))


def learn_text_maps(clip, source: list[str], target: list[str], sites: str, pattern: str,
                    method: str, support: str) -> MapSet:
    encoder = clip.cond_stage_model
    patterns = ([p.strip() for p in pattern.split(",") if p.strip()] if sites == "custom"
                else list(TEXT_PRESETS[sites]))
    chosen = resolve_sites(encoder, patterns)
    pbar = comfy.utils.ProgressBar(len(source) + len(target))

    def runner(prompts):
        def run(recorder) -> None:
            for p in prompts:
                _encode(clip, p)
                pbar.update(1)
        return run

    maps = fit_sites(encoder, chosen, runner(source), runner(target), method=method,
                     incremental=False)
    metadata = {"model": {"family": type(encoder).__name__, "target": TEXT_TARGET},
                "prompt_hash": prompt_hash(source, target), "support": support,
                "method": method, "extra": {"sites": sites, "patterns": patterns}}
    return MapSet(maps, metadata)


def patch_clip(clip, maps: MapSet, strength: float):
    """A clone of ``clip`` whose encodings are transported (clones of it stay patched)."""
    if (maps.metadata.get("model") or {}).get("target") != TEXT_TARGET:
        raise ValueError("these maps were learned on the diffusion model, not the text "
                         "encoder: use AcT Apply Transport on the MODEL instead")
    check_strength_range(strength, maps)
    support = str(maps.metadata.get("support") or "minmax")
    patched = clip.clone()
    encode, clone = patched.encode_from_tokens, patched.clone

    def encode_from_tokens(*args, **kwargs):
        with apply_transport(patched.cond_stage_model, maps, strength, support):
            return encode(*args, **kwargs)

    def clone_patched(*args, **kwargs):
        return patch_clip(clone(*args, **kwargs), maps, strength)

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
                IO.String.Input("source_prompts", multiline=True, default="a red circle",
                                tooltip="One prompt per line: what the model makes now."),
                IO.String.Input("target_prompts", multiline=True,
                                default="a striped red circle",
                                tooltip="One prompt per line: what you want instead."),
                IO.Combo.Input("sites", options=[*TEXT_PRESETS, "custom"],
                               default="final norm",
                               tooltip="Where to intervene in the text encoder."),
                IO.String.Input("pattern", default="", advanced=True,
                                tooltip="For sites = custom: comma-separated module-name "
                                        "globs or 're:' regexes."),
                IO.Combo.Input("method", options=list(ESTIMATORS), default="linear_act",
                               tooltip="Estimator (linear_act is the paper's default)."),
                IO.Combo.Input("support", options=["unbounded", "minmax"], default="unbounded",
                               tooltip="Recorded default support for applying."),
            ],
            outputs=[IO.Custom("ACT_MAPS").Output(display_name="maps",
                                                  tooltip="Maps for the text encoder.")],
        )

    @classmethod
    def execute(cls, clip, source_prompts, target_prompts, sites, pattern, method,
                support) -> IO.NodeOutput:
        source = parse_prompts(source_prompts, "source_prompts")
        target = parse_prompts(target_prompts, "target_prompts")
        return IO.NodeOutput(learn_text_maps(clip, source, target, sites, pattern, method,
                                             support))


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
                IO.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Lambda: 0 = unchanged, 1 = like the target prompts."),
            ],
            outputs=[IO.Clip.Output(tooltip="The patched copy of the CLIP.")],
        )

    @classmethod
    def execute(cls, clip, maps, strength) -> IO.NodeOutput:
        return IO.NodeOutput(patch_clip(clip, maps, strength))
