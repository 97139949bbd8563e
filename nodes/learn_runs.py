"""How AcT Learn Transport runs the denoiser on a prompt set: one evaluation per prompt at a
point of the schedule, or an euler trajectory recording some of its steps (cfg 1, the
conditional half, through ComfyUI's own sampling path so every patch applies)."""

from __future__ import annotations

import contextlib

import comfy.model_management
import comfy.sample
import comfy.samplers
import torch

from ..act_core import apply_transport
from .common import drop_cached_state, family_of
from .families import DEFAULT_SIZE

__all__ = ["COLLECT", "NO_PROGRESS", "collect_sigma", "during", "empty_latent", "runner",
           "range_steps", "steered"]

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


def _trajectory_sampler(box: dict, recorded: tuple[int, int]):
    """An euler sampler that records only steps ``recorded[0] <= i < recorded[1]`` and stops
    after the last of them (``box["recorder"]`` is the recorder of the current pass; the step
    being run is kept in ``box["step"]``)."""
    first, stop = recorded

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        recorder = box["recorder"]
        ones = x.new_ones([x.shape[0]])
        for i in range(min(stop, len(sigmas) - 1)):
            box["step"] = i
            recorder.paused = not first <= i < stop
            try:
                denoised = model(x, sigmas[i] * ones, **(extra_args or {}))
            finally:
                recorder.paused = False
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x

    return sample


def range_steps(sampling, steps: int, bucket: int, buckets: int
                      ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The 'normal' schedule of ``steps`` steps and the steps (first, stop) whose sigma falls in
    timestep range ``bucket`` of ``buckets``, by the rule AcT Apply Transport applies them with."""
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", steps).cpu()
    bounds = [float(sampling.percent_to_sigma(j / buckets)) for j in range(1, buckets)]
    inside = [i for i in range(steps)
              if sum(1 for bound in bounds if float(sigmas[i]) < bound) == bucket]
    if not inside:  # a range narrower than one step: the step nearest to its middle
        middle = float(sampling.percent_to_sigma((bucket + 0.5) / buckets))
        inside = [int(torch.argmin((sigmas[:steps] - middle).abs()))]
    return sigmas, (inside[0], inside[-1] + 1)


def during(box: dict, steps: tuple[int, int]):
    """A strength callable: 1 while the trajectory sampler runs a step of ``steps``, else 0."""
    first, stop = steps
    return lambda: 1.0 if first <= box["step"] < stop else 0.0


def steered(diffusion_model, run, earlier: list, box: dict, support: str):
    """``run`` with the maps of earlier timestep ranges applied on their own steps, as AcT
    Apply Transport applies them, so a range is fitted on the states that sampling with the
    earlier ranges' maps reaches (incremental fitting, across time)."""
    def run_steered(recorder) -> None:
        with contextlib.ExitStack() as stack:
            for maps, steps in earlier:
                stack.enter_context(apply_transport(diffusion_model, maps, during(box, steps),
                                                    support))
            run(recorder)

    return run_steered


def runner(model, conds, latent, seed: int, sigma: float, pbar, trajectory=None,
            box: dict | None = None):
    """A run(recorder) that evaluates the denoiser on every conditioning: once at ``sigma``,
    or, with ``trajectory = (sigmas, (first, stop))`` and a ``box`` dict, along an euler
    trajectory (cfg 1) recording the steps first..stop-1."""
    if trajectory is None:
        sampler = comfy.samplers.KSAMPLER(_one_evaluation)
        sigmas = torch.tensor([sigma, 0.0])
    else:
        sigmas, recorded = trajectory
        sampler = comfy.samplers.KSAMPLER(_trajectory_sampler(box, recorded))

    def run(recorder) -> None:
        if trajectory is not None:
            box["recorder"] = recorder
        diffusion_model = model.get_model_object("diffusion_model")
        try:
            for i, cond in enumerate(conds):
                comfy.model_management.throw_exception_if_processing_interrupted()
                drop_cached_state(diffusion_model)  # maps may be applied: no shared cache
                noise = comfy.sample.prepare_noise(latent, seed + i)
                comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, cond, cond,
                                           latent, disable_pbar=True, seed=seed + i)
                pbar.update(1)
        finally:
            drop_cached_state(diffusion_model)

    return run


def empty_latent(model, latent: dict | None, samples_per_prompt: int) -> torch.Tensor:
    """``samples_per_prompt`` noise samples at the latent's size (or the family's usual one)."""
    if latent is not None:
        return torch.zeros(samples_per_prompt, *latent["samples"].shape[1:])
    size = DEFAULT_SIZE.get(family_of(model), 512)
    latent_format = model.get_model_object("latent_format")
    frames = (1,) * (getattr(latent_format, "latent_dimensions", 2) - 2)  # video: (T=1,)
    return torch.zeros(samples_per_prompt, latent_format.latent_channels, *frames, size // 8,
                       size // 8)
