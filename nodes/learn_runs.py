"""How AcT Learn Transport runs the denoiser on a prompt set: one evaluation per prompt at a
point of the schedule, or an euler trajectory recording some of its steps (cfg 1, the
conditional half, through ComfyUI's own sampling path so every patch applies; the trajectory
itself is the core's :class:`act_core.trajectory.Trajectory`)."""

from __future__ import annotations

import comfy.model_management
import comfy.nested_tensor
import comfy.sample
import comfy.samplers
import torch

from ..act_core.errors import BatchSizeError
from ..act_core.trajectory import Trajectory, steps_in_range
from .common import drop_cached_state, family_of
from .families import DEFAULT_SIZE

__all__ = ["COLLECT", "NO_PROGRESS", "collect_sigma", "doubled_probe", "empty_latent",
           "noise_parts", "range_steps", "runner"]

def _one_evaluation(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A 'sampler' that evaluates the model once at sigmas[0] and returns its input."""
    model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    return x


def collect_sigma(sampling, percent: float) -> float:
    if percent <= 0.0:
        return float(sampling.sigma_max)
    return float(sampling.percent_to_sigma(min(percent, 0.999)))


COLLECT = ("first step", "trajectory")
NO_PROGRESS = type("NoProgress", (), {"update": staticmethod(lambda n: None)})()


def range_steps(sampling, steps: int, bucket: int, buckets: int
                      ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The 'normal' schedule of ``steps`` steps and the steps (first, stop) whose sigma falls in
    timestep range ``bucket`` of ``buckets``, by the rule AcT Apply Transport applies them with."""
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", steps).cpu()
    bounds = [float(sampling.percent_to_sigma(j / buckets)) for j in range(1, buckets)]
    middle = float(sampling.percent_to_sigma((bucket + 0.5) / buckets))
    return sigmas, steps_in_range(sigmas[:steps], bounds, bucket, middle)


def noise_parts(noise: torch.Tensor, latent: torch.Tensor, single: bool) -> list:
    """The (noise, latent) pairs one denoiser evaluation runs: the whole batch, or, for a model
    that takes batch 1 only (``single``), each noise sample alone (the same noise as one
    batched call)."""
    if single:
        return [(noise[j:j + 1], latent[j:j + 1]) for j in range(latent.shape[0])]
    return [(noise, latent)]


def runner(model, conds, latent, seed: int, sigma: float, pbar, trajectory=None,
           box: Trajectory | None = None, single: bool = False):
    """A run(recorder) that evaluates the denoiser on every conditioning: once at ``sigma``,
    or, with ``trajectory = (sigmas, (first, stop))`` and a ``box``
    (:class:`act_core.trajectory.Trajectory`), along an euler trajectory (cfg 1) recording the
    steps first..stop-1. ``single``: the model takes batch 1 only; each of the latent's noise
    samples runs alone (the same noise as one batched call)."""
    if trajectory is None:
        sampler = comfy.samplers.KSAMPLER(_one_evaluation)
        sigmas = torch.tensor([sigma, 0.0])
    else:
        sigmas, recorded = trajectory
        sampler = comfy.samplers.KSAMPLER(box.sampler(recorded))

    def run(recorder) -> None:
        if trajectory is not None:
            box.recorder = recorder
        diffusion_model = model.get_model_object("diffusion_model")
        try:
            for i, cond in enumerate(conds):
                comfy.model_management.throw_exception_if_processing_interrupted()
                drop_cached_state(diffusion_model)  # maps may be applied: no shared cache
                noise = comfy.sample.prepare_noise(latent, seed + i)
                for part_noise, part in noise_parts(noise, latent, single):
                    comfy.sample.sample_custom(model, part_noise, 1.0, sampler, sigmas, cond,
                                               cond, part, disable_pbar=True, seed=seed + i)
                pbar.update(1)
        finally:
            drop_cached_state(diffusion_model)

    return run


def doubled_probe(model, conds, latent, seed: int, sigma: float):
    """The probe pass of site discovery with twice the batch (its batch dims double). A model
    that fails on it (it takes batch 1 only, as MiniMax H3) raises BatchSizeError with its
    own message; an interruption by the user stays one."""
    run = runner(model, conds, repeat_batch(latent, 2), seed, sigma, NO_PROGRESS)

    def probe() -> None:
        try:
            run(None)
        except comfy.model_management.InterruptProcessingException:
            raise
        except Exception as error:  # the model's own refusal: any type it chooses
            raise BatchSizeError(f"{type(error).__name__}: {error}") from error
    return probe


def repeat_batch(latent, n: int):
    """Every item of a latent (a tensor or ComfyUI's NestedTensor of streams) ``n`` times."""
    if getattr(latent, "is_nested", False):
        return comfy.nested_tensor.NestedTensor(
            [t.repeat_interleave(n, dim=0) for t in latent.unbind()])
    return latent.repeat_interleave(n, dim=0)


def empty_latent(model, latent: dict | None, samples_per_prompt: int) -> torch.Tensor:
    """``samples_per_prompt`` noise samples at the latent's size (or the family's usual one);
    a NestedTensor latent (video and audio streams) gives one of the same streams."""
    if latent is not None and getattr(latent["samples"], "is_nested", False):
        return comfy.nested_tensor.NestedTensor(
            [torch.zeros(samples_per_prompt, *t.shape[1:]) for t in latent["samples"].unbind()])
    if latent is not None:
        return torch.zeros(samples_per_prompt, *latent["samples"].shape[1:])
    size = DEFAULT_SIZE.get(family_of(model), 512)
    latent_format = model.get_model_object("latent_format")
    frames = (1,) * (getattr(latent_format, "latent_dimensions", 2) - 2)  # video: (T=1,)
    return torch.zeros(samples_per_prompt, latent_format.latent_channels, *frames, size // 8,
                       size // 8)
