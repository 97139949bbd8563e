"""Diffusers integration: fit and apply maps on a text-to-image pipeline's denoiser.

The same estimators and map files as the ComfyUI nodes and the transformers integration. Sites
live in the pipeline's denoiser (``pipe.unet``, or ``pipe.transformer`` for DiT pipelines); the
text encoder is not touched. As in the paper, activations are collected at ONE denoising step,
the first (noisiest), without classifier-free guidance (the conditional pass only), and the same
map is applied at every step (maps with timestep ranges, e.g. from the ComfyUI nodes, apply
each range's maps on its part of the schedule)::

    from act_core.diffusers import pipeline as dp
    maps = dp.fit_pipeline(pipe, plain_prompts, styled_prompts, sites="norms")
    dp.save_pipeline_maps("style.safetensors", maps, pipe)
    maps = dp.load_pipeline_maps("style.safetensors", pipe)   # refuses another architecture
    with dp.steer_pipeline(pipe, maps, strength=1.0, support="unbounded"):
        image = pipe("a red circle").images[0]

Feature-map sites (B, C, H, W), e.g. GroupNorm, are transported on their per-channel spatial
mean ("channels" mode); token sites (B, N, C), e.g. the LayerNorms of transformer blocks, per
token. Diffusers is imported lazily (only the pipeline object passed in is used).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from act_core.apply import apply_transport
from act_core.diffusers.names import COMFY_UNET_FAMILIES, translate_comfy_maps
from act_core.errors import MapCompatibilityError, SiteError
from act_core.fitting import fit_sites
from act_core.mapfile import load_maps, save_maps
from act_core.maps import TransportMap
from act_core.mapset import MapSet, check_compatible, hint_mismatches, prompt_hash
from act_core.record import Recorder
from act_core.schedule import ApplySettings
from act_core.sites import Site, resolve_sites, site_widths
from act_core.timesteps import timestep_ranges

__all__ = [
    "PIPELINE_PRESETS",
    "denoiser",
    "fit_pipeline",
    "load_pipeline_maps",
    "pipeline_hint",
    "pipeline_sites",
    "run_prompts",
    "save_pipeline_maps",
    "steer_pipeline",
]

#: Preset -> site patterns for :func:`act_core.sites.resolve_sites`, on the denoiser.
PIPELINE_PRESETS: dict[str, tuple[str, ...]] = {
    "norms": ("norms",),  # every GroupNorm / LayerNorm: the paper's SDXL choice
    "attn_out": (r"re:.*attn\d?\.to_out\.0",),  # attention output projections
    "cross_attn_out": (r"re:.*attn2\.to_out\.0",),  # cross-attention outputs only
    "blocks": (r"re:(?:single_)?transformer_blocks\.\d+",),  # DiT blocks (FLUX, SD3)
}


def denoiser(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoising network (``unet`` or ``transformer``)."""
    for name in ("unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise SiteError(f"{type(pipe).__name__} has no unet or transformer; pass a diffusers "
                    "text-to-image pipeline")


def pipeline_sites(pipe: Any, sites: str | Sequence[str] = "norms") -> list[Site]:
    """Resolve a preset of :data:`PIPELINE_PRESETS` or site patterns on the denoiser."""
    specs = [sites] if isinstance(sites, str) else list(sites)
    patterns = [p for s in specs for p in PIPELINE_PRESETS.get(s, (s,))]
    return resolve_sites(denoiser(pipe), patterns)


def pipeline_hint(pipe: Any) -> dict[str, Any]:
    """Model hint stored in map files: denoiser class, channels and the pipeline's source."""
    net = denoiser(pipe)
    config = getattr(net, "config", {})
    return {
        "family": f"diffusers:{type(net).__name__}",
        "pipeline": type(pipe).__name__,
        "name_or_path": str(getattr(pipe, "name_or_path", "") or ""),
        "in_channels": config.get("in_channels"),
        "block_out_channels": list(config.get("block_out_channels") or []),
        "num_layers": config.get("num_layers"),
    }


@torch.inference_mode()
def run_prompts(pipe: Any, prompts: Sequence[str], *, steps: int = 4, batch_size: int = 8,
                seed: int = 0, height: int | None = None, width: int | None = None,
                **pipe_kwargs: Any) -> None:
    """Run the pipeline's first denoising step only, conditional pass only, over ``prompts``.

    The pipeline is called with ``guidance_scale=1`` (no unconditional pass) and
    ``output_type="latent"``, and interrupted after step 0, the noisiest timestep of a
    ``steps``-step schedule. Latents are seeded per batch (``seed + batch index``).
    """
    def stop_after_first(pipeline, step, timestep, callback_kwargs):
        pipeline._interrupt = True  # the pipelines' own flag: skip the remaining steps
        return {}

    for k, start in enumerate(range(0, len(prompts), batch_size)):
        batch = list(prompts[start : start + batch_size])
        generator = torch.Generator(device="cpu").manual_seed(seed + k)
        pipe(prompt=batch, num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
             height=height, width=width, generator=generator,
             callback_on_step_end=stop_after_first, **pipe_kwargs)


def fit_pipeline(pipe: Any, source_prompts: Sequence[str], target_prompts: Sequence[str],
                 sites: str | Sequence[str] = "norms", *, method: str = "linear_act",
                 incremental: bool = True, stages: int | None = 4, steps: int = 4,
                 batch_size: int = 8, seed: int = 0, **pipe_kwargs: Any
                 ) -> dict[str, TransportMap]:
    """Fit one map per denoiser site from source prompts to target prompts.

    Parameters
    ----------
    pipe
        A diffusers text-to-image pipeline (SD 1.x/2.x/XL, or a DiT pipeline with
        ``callback_on_step_end``).
    source_prompts, target_prompts : sequence of str
        One image per prompt; N != M is fine.
    sites
        A preset of :data:`PIPELINE_PRESETS` (default ``norms``) or site patterns.
    method, incremental, stages
        As :func:`act_core.fitting.fit_sites`; UNets have hundreds of norm sites, so the
        incremental fit defaults to 4 stages (4 source passes) rather than one per site.
    steps, batch_size, seed, **pipe_kwargs
        Passed to :func:`run_prompts` (e.g. ``height``, ``width``).

    Returns
    -------
    dict of site -> TransportMap; ``channels`` mode for (B, C, H, W) sites, ``tokens`` for
    (B, N, C) sites.
    """
    net = denoiser(pipe)
    options = {"steps": steps, "batch_size": batch_size, "seed": seed, **pipe_kwargs}

    def run(prompts: Sequence[str]):
        def go(recorder: Recorder) -> None:
            recorder.token_mask = None  # image tokens have no padding
            run_prompts(pipe, prompts, **options)
        return go

    return fit_sites(net, pipeline_sites(pipe, sites), run(source_prompts), run(target_prompts),
                     method=method, incremental=incremental, stages=stages)


def save_pipeline_maps(path: Any, maps: Mapping[str, TransportMap], pipe: Any, *,
                       source_prompts: Sequence[str] | None = None,
                       target_prompts: Sequence[str] | None = None,
                       metadata: Mapping[str, Any] | None = None,
                       support: str = "minmax") -> Any:
    """Save maps with :func:`pipeline_hint` so that another architecture is refused on load."""
    digest = None
    if source_prompts is not None and target_prompts is not None:
        digest = prompt_hash(source_prompts, target_prompts)
    return save_maps(path, maps, metadata, model=pipeline_hint(pipe), prompt_hash=digest,
                     support=support)


def load_pipeline_maps(path: Any, pipe: Any | None = None) -> MapSet:
    """Load a map file; with ``pipe``, refuse maps fitted on another denoiser architecture.

    Maps fitted with the ComfyUI nodes on an SD-style UNet (family ``sd15``, ``sd2``, ``sdxl``)
    are renamed to the diffusers UNet's modules (:mod:`act_core.diffusers.names`) and their
    sites and widths checked.

    Raises
    ------
    MapCompatibilityError
        When the recorded family or channel layout differs; the message names the fix.
    """
    maps = load_maps(path)
    if pipe is None:
        return maps
    recorded, current = maps.metadata.get("model") or {}, pipeline_hint(pipe)
    if recorded.get("family") in COMFY_UNET_FAMILIES and \
            current["family"] == "diffusers:UNet2DConditionModel":
        return _checked(translate_comfy_maps(maps, denoiser(pipe)), pipe)
    wrong = hint_mismatches(recorded, current,
                            ("family", "in_channels", "block_out_channels", "num_layers"),
                            "this pipeline")
    if wrong:
        raise MapCompatibilityError(
            f"map file {path} was fitted on another model: {', '.join(wrong)}. Fix: fit maps "
            "for this pipeline with act_core.diffusers.pipeline.fit_pipeline")
    return maps


def _checked(maps: MapSet, pipe: Any) -> MapSet:
    """Check that every site exists in the denoiser with the map's width."""
    check_compatible(maps, site_widths(denoiser(pipe), maps, maps))
    return maps


def _progress_tracker(pipe: Any, net: torch.nn.Module) -> tuple[Any, dict[str, float]]:
    """A forward pre-hook on the denoiser that stores the schedule progress and the batch
    size B of each call.

    progress = 1 - t / num_train_timesteps (0 = pure noise), with t the denoiser's timestep;
    pipelines that pass t / num_train_timesteps (FLUX) are recognised by comparing with the
    scheduler's own timesteps.
    """
    scheduler = pipe.scheduler
    total = float(getattr(scheduler.config, "num_train_timesteps", 1000) or 1000)
    state = {"progress": 0.0, "batch": 1}

    def hook(module, args, kwargs):
        x = kwargs.get("sample", kwargs.get("hidden_states", args[0] if args else None))
        if isinstance(x, torch.Tensor) and x.ndim:
            state["batch"] = int(x.shape[0])
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is None:
            return None
        value = float(torch.as_tensor(t).reshape(-1)[0])
        steps = torch.as_tensor(getattr(scheduler, "timesteps", []), dtype=torch.float64)
        if value <= 1.0 and steps.numel() and not bool(((steps - value).abs() < 1e-3).any()) \
                and bool(((steps - value * total).abs() < 0.5).any()):
            value *= total  # the pipeline scaled t to [0, 1]
        state["progress"] = min(max(1.0 - value / total, 0.0), 1.0)
        return None

    return net.register_forward_pre_hook(hook, with_kwargs=True), state


@contextmanager
def steer_pipeline(pipe: Any, maps: Mapping[str, TransportMap], strength: float = 1.0,
                   support: str = "minmax", *, apply_to: str = "both", start_percent: float = 0.0,
                   end_percent: float = 1.0) -> Iterator[None]:
    """Apply maps to the denoiser at the steps of every pipeline call inside the context.

    Use ``support="unbounded"`` to induce a style or concept and ``"minmax"`` (default) to
    mitigate one. The settings are the nodes' (:class:`act_core.schedule.ApplySettings`):

    * ``apply_to``: ``"both"`` (default) transports the whole denoiser batch; under
      classifier-free guidance ``"conditional"`` or ``"unconditional"`` transports one half,
      for pipelines that batch ``[unconditional, conditional]`` (the Stable Diffusion family);
    * ``start_percent`` .. ``end_percent``: the part of the schedule where the maps act.

    The position in the schedule is ``1 - t / num_train_timesteps`` of the denoiser's timestep
    ``t``; maps with timestep ranges (:mod:`act_core.timesteps`) act on their range only.
    """
    settings = ApplySettings.checked(maps, strength, start_percent, end_percent, apply_to,
                                     limit=False)
    net = denoiser(pipe)
    ranged = len(timestep_ranges(maps)) > 1
    if not ranged and settings.whole_schedule and settings.apply_to == "both":
        with apply_transport(net, maps, settings.strength, support):
            yield
        return
    handle, state = _progress_tracker(pipe, net)

    def strength_now() -> float | torch.Tensor:
        if not settings.active(state["progress"]):
            return 0.0
        halves = [1, 0] if getattr(pipe, "do_classifier_free_guidance", False) else None
        return settings.per_item(halves, state["batch"])

    try:
        with apply_transport(net, maps, strength_now, support,
                             progress=(lambda: state["progress"]) if ranged else None):
            yield
    finally:
        handle.remove()
