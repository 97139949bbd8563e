"""The toy checkpoint inside ComfyUI, in-process, as the ComfyUI benchmarks drive it.

The pack imported as a custom node pack, the checkpoint loaded with ComfyUI's loader, the
reference sites (every norm of the UNet), plain denoiser evaluations through the sampling path
``learn_maps`` uses, a clone that counts its evaluations, and resident-set readings (Linux) for
the memory runs. Used by ``bench_apply_comfyui``, ``bench_learn_cost``, ``bench_realsize``,
``compile_check`` and ``toy_methods``.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from pathlib import Path

import torch

from harness.comfy_env import import_comfy, import_pack
from toyworld.checkpoint import checkpoint_path

__all__ = ["CFG", "FIT_SOURCE", "FIT_TARGET", "NEGATIVE", "PROMPT", "SAMPLER", "SCHEDULER",
           "SEED", "SIZE", "plain_passes", "reference_sites"]

ROOT = Path(__file__).resolve().parent.parent
# the setting of the ComfyUI benchmarks: maps fitted plain -> striped on four prompts, applied
# while sampling one held-out prompt (euler, cfg 5, 64x64)
FIT_SOURCE = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]
FIT_TARGET = ["a striped " + p.removeprefix("a ") for p in FIT_SOURCE]
PROMPT, NEGATIVE = "a blue triangle", ""
CFG, SIZE, SAMPLER, SCHEDULER, SEED = 5.0, 64, "euler", "normal", 0


def reference_sites(pack, model) -> str:
    """The family's reference site preset (every norm layer of a UNet, Flux's block outputs):
    the sites these benchmarks measure, fixed, where ``auto`` would choose by measurement."""
    families = pack.nodes.families
    return next(iter(families.SITE_PRESETS[families.arch_of(
        model.get_model_object("diffusion_model"))]))


def _pack():
    """The repository imported as a ComfyUI custom node pack (relative imports work)."""
    return import_pack()


def _setup():
    import_comfy()
    logging.getLogger().setLevel(logging.WARNING)  # ComfyUI's "Requested to load ..." lines
    import comfy.sd

    pack = _pack()
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    return pack, model, clip


def _one_evaluation(model, x, sigmas, extra_args=None, callback=None, disable=None):
    model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    return x


def plain_passes(model, conds: list, latent: torch.Tensor, seed: int) -> None:
    """One denoiser evaluation per conditioning at the noisiest step, through the sampling path
    learn_maps uses (``sample_custom``, cfg 1), with nothing recorded."""
    import comfy.sample
    import comfy.samplers

    sampler = comfy.samplers.KSAMPLER(_one_evaluation)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    sigmas = torch.tensor([sigma, 0.0])
    for i, cond in enumerate(conds):
        noise = comfy.sample.prepare_noise(latent, seed + i)
        comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, cond, cond, latent,
                                   disable_pbar=True, seed=seed + i)


def _counting(model):
    """A clone that counts its denoiser evaluations (the same wrapper for learn and floor)."""
    from comfy.patcher_extension import WrappersMP

    counter = [0]

    def count(executor, *args, **kwargs):
        counter[0] += 1
        return executor(*args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "bench_count", count)
    return clone, counter


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Free what can be freed, reset the peak resident set to the current one (Linux:
    ``/proc/self/clear_refs``); return the current resident set in KiB."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")
