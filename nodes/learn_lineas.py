"""LinEAS inside the learn nodes: every site learned jointly through ComfyUI's denoiser (AcT
Learn Transport) or through a CLIP's text encoder(s) (AcT Learn Text-Encoder Transport,
:func:`fit_lineas_clip`; the switches of :func:`differentiable` serve both).

The prompts run through ComfyUI's own sampling path once per evaluation (as for the other
estimators: seeded noise at the chosen point of the schedule, cfg 1, conditional half). ComfyUI
evaluates the model under ``torch.no_grad`` and runs nodes under ``torch.inference_mode``; a
clone of the MODEL gets a model-function wrapper that turns gradients back on around the model
call, so LinEAS's loss reaches every map, and ComfyUI's ``in_training`` switch selects its
differentiable kernels (Flux's rotary embedding) while the fit runs. ComfyUI's blocks may add
to an activation in place after an op saved it for the backward pass (Flux: ``img += ...``),
which backpropagation refuses; during the fit every saved tensor that carries the maps'
gradient is saved as a copy (:func:`saved_copies`). The input MODEL is not changed.

A LinEAS source *input* is one prompt with its ``samples_per_prompt`` noise samples; every step
draws ``batch_size`` prompts with fresh seeded noise, so the maps see more noise than the
target's fixed draws (the memory of a step is that of ``batch_size * samples_per_prompt``
latents with their backward pass).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import comfy.model_management
import comfy.sample
import comfy.samplers
import torch

from ..act_core.errors import SiteError
from ..act_core.lineas import LineasConfig, LineasFit, fit_lineas
from .common import drop_cached_state, encode_prompt
from .families import SITE_PRESETS, choose_sites
from .learn_runs import noise_parts

__all__ = ["fit_lineas_clip", "fit_lineas_comfy", "lineas_candidates", "lineas_structure_sites",
           "with_gradients"]

log = logging.getLogger(__name__)


def with_gradients(model):
    """A clone of ``model`` whose denoiser calls run with gradients enabled."""
    m = model.clone()
    previous = m.model_options.get("model_function_wrapper")

    def wrapper(apply_model, args):
        with torch.enable_grad():
            if previous is not None:
                return previous(apply_model, args)
            return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m


@contextlib.contextmanager
def normal_weights(module: torch.nn.Module):
    """Swap weights created under ``torch.inference_mode`` (as ComfyUI's loaders make them)
    for normal copies while the context runs, so autograd may save them for the backward pass;
    the original tensors are put back on exit (the copies cost the memory of those weights)."""
    swapped = []
    try:
        with torch.inference_mode(False):
            for owner in module.modules():
                for table in (owner._parameters, owner._buffers):
                    for name, value in table.items():
                        if value is not None and value.is_inference():
                            copy = value.clone()
                            if isinstance(value, torch.nn.Parameter):
                                copy = torch.nn.Parameter(copy, requires_grad=False)
                            swapped.append((table, name, value))
                            table[name] = copy
        if swapped:
            log.info("AcT lineas: %d weight tensors made differentiable for the fit",
                     len(swapped))
        yield
    finally:
        for table, name, value in reversed(swapped):
            table[name] = value


def _copy_if_differentiable(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone() if t.requires_grad else t


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def saved_copies():
    """While active, autograd saves a copy of each tensor that requires grad (the activations
    downstream of a map, the maps' own parameters) instead of the tensor itself, so a later
    in-place change of that activation by the model's code leaves the backward pass intact.
    The graph holds the copy instead of the original, which is freed once nothing else holds
    it; making the copies costs one pass over those activations."""
    return torch.autograd.graph.saved_tensors_hooks(_copy_if_differentiable, _same)


#: comfy_kitchen's fused RMSNorm/RoPE kernels, which have no backward pass; its eager backend
#: holds the same functions in plain PyTorch, with the same signatures
_FUSED = ("apply_rope", "apply_rope1", "apply_rope_split_half", "apply_rope_split_half1",
          "rms_rope", "rms_rope1", "rms_rope_split_half", "rms_rope_split_half1")


@contextlib.contextmanager
def differentiable_kernels():
    """While active, ``comfy_kitchen.<kernel>`` (which ComfyUI's Anima, Cosmos Predict2, Ernie
    Image, JoyImage and MiniMax H3 call even under ``in_training``) is the eager backend's
    plain-PyTorch function of the same name, so backpropagation passes; restored on exit. Where
    comfy_kitchen or its eager backend is missing, nothing changes."""
    try:
        import comfy_kitchen
        from comfy_kitchen.backends.eager import rope
    except ImportError:
        yield
        return
    saved = {name: getattr(comfy_kitchen, name) for name in _FUSED
             if hasattr(comfy_kitchen, name) and callable(getattr(rope, name, None))}
    try:
        for name in saved:
            setattr(comfy_kitchen, name, getattr(rope, name))
        yield
    finally:
        for name, fused in saved.items():
            setattr(comfy_kitchen, name, fused)


@contextlib.contextmanager
def differentiable(module: torch.nn.Module, what: str):
    """While active, ``module`` can be backpropagated through as ComfyUI runs it: inference mode
    off, ComfyUI's ``in_training`` switch on (its differentiable ops), normal copies of inference
    weights, saved copies, eager kernels. A kernel that still has no backward pass becomes a
    ValueError naming it (``what``: the model, for the message)."""
    training = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        with (torch.inference_mode(False), normal_weights(module), saved_copies(),
              differentiable_kernels()):
            yield
    except RuntimeError as err:
        if "no autograd formula" not in str(err):
            raise
        kernel = str(err).split(" but ")[0].removeprefix("Trying to backward through ")
        raise ValueError(
            f"method lineas cannot learn through {what}: ComfyUI runs it with a fused kernel "
            f"that has no backward pass ({kernel}); choose linear_act (or another per-site "
            "method) for it") from err
    finally:
        comfy.model_management.in_training = training


def _normal(value):
    """A copy of a CONDITIONING value (nested lists/dicts) with normal, not inference, tensors."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _evaluate_once(model, x, sigmas, extra_args=None, callback=None, disable=None):
    model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    return x


def fit_lineas_comfy(model, sites: Sequence, src_conds: list, tgt_conds: list,
                     latent: torch.Tensor, seed: int, sigma: float, pbar,
                     config: LineasConfig, target_seed: int, single: bool = False) -> LineasFit:
    """Run :func:`act_core.lineas.fit_lineas` on ComfyUI's denoiser (see the module notes).

    ``latent`` (S, C, h, w) is the empty latent of one prompt's S noise samples; prompt i of
    the target uses seed ``target_seed + i``, of the source ``seed + i`` in the passes that
    record the support and ``seed + i + 7919 * k`` at step k. ``single``: the model takes
    batch 1 only, so each noise sample runs alone (the same noise as one batched call).
    """
    m = with_gradients(model)
    diffusion_model = m.get_model_object("diffusion_model")
    sampler = comfy.samplers.KSAMPLER(_evaluate_once)
    sigmas = torch.tensor([sigma, 0.0])
    calls = {"n": 0}

    def evaluate(cond, noise_seed: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        drop_cached_state(diffusion_model)  # no keys/values cached under other maps (HiDream-O1)
        noise = comfy.sample.prepare_noise(latent, noise_seed)
        for part_noise, part in noise_parts(noise, latent, single):
            comfy.sample.sample_custom(m, part_noise, 1.0, sampler, sigmas, cond, cond, part,
                                       disable_pbar=True, seed=noise_seed)

    def run_source(indices, recorder) -> None:
        calls["n"] += 1  # steps draw fresh noise; the two whole passes use the plain seeds
        fresh = 7919 * calls["n"] if _in_steps(calls["n"], len(src_conds), config) else 0
        for i in indices:
            evaluate(src_conds[i], seed + i + fresh)

    def run_target(recorder) -> None:
        for i, cond in enumerate(tgt_conds):
            evaluate(cond, target_seed + i)

    def progress(done: int, total: int) -> None:
        pbar.update(1)

    try:
        with differentiable(diffusion_model, "this model"):
            src_conds, tgt_conds = _normal(src_conds), _normal(tgt_conds)
            return fit_lineas(diffusion_model, sites, run_source, len(src_conds), run_target,
                              config=config, progress=progress, device=latent.device)
    finally:
        drop_cached_state(diffusion_model)


def fit_lineas_clip(clip, sites: Sequence, source: list[str], target: list[str],
                    config: LineasConfig, pbar) -> LineasFit:
    """Run :func:`act_core.lineas.fit_lineas` on a CLIP's text encoder(s).

    One input is one prompt, encoded as CLIP Text Encode does; its token outputs are pooled over
    the encoder's whole context, as the text-encoder node's other estimators pool them. The same
    switches as on the denoiser make the encoder differentiable while the fit runs (gradients on
    under ComfyUI's inference mode, normal copies of inference weights, saved copies, eager
    kernels); the CLIP is not changed.
    """
    encoder = clip.cond_stage_model

    def run_source(indices, recorder) -> None:
        for i in indices:
            encode_prompt(clip, source[i])

    def run_target(recorder) -> None:
        for prompt in target:
            encode_prompt(clip, prompt)

    clip.load_model(clip.tokenize(source[0]))  # onto its device first: the maps live there
    device = getattr(getattr(clip, "patcher", None), "load_device", None) or "cpu"
    with differentiable(encoder, "this text encoder"):  # fit_lineas turns gradients on
        return fit_lineas(encoder, sites, run_source, len(source), run_target, config=config,
                          progress=lambda done, total: pbar.update(1), device=device)


def _in_steps(call: int, n_source: int, config: LineasConfig) -> bool:
    """Whether the current source call is a training step (not a support/report pass).

    fit_lineas makes one pass of ceil(n / batch) calls, then ``steps`` step calls, then
    another pass.
    """
    size = min(config.batch_size, n_source)
    per_pass = -(-n_source // size)
    return per_pass < call <= per_pass + config.steps


def lineas_structure_sites(diffusion_model, probe, probe_double) -> tuple[list[str], list]:
    """``auto`` with LinEAS on a model without presets: the block outputs and the affine norms
    inside the blocks at once (the structure presets' union; the block outputs alone where
    the blocks hold no affine norm). On the toy UNet, as a model without presets, the union
    draws stripes in 7 of 12 held-out images where the block outputs alone draw none
    (docs/results_toyworld.md)."""
    try:
        return choose_sites(diffusion_model, "block outputs + norms (structure)", "", probe,
                            probe_double)
    except SiteError:
        return choose_sites(diffusion_model, "block outputs (structure)", "", probe,
                            probe_double)


def lineas_candidates(arch: str) -> list[str]:
    """``auto`` with LinEAS: every preset's sites of the architecture together (the candidates;
    LinEAS's sparsity and the diagnostics say which it used)."""
    return list(dict.fromkeys(p for preset in SITE_PRESETS[arch].values() for p in preset))
