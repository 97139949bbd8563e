"""Diagnostic: how far apart are pooled source/target activations, per norm site and timestep?

Records every norm site of the toy UNet on 6 plain and 6 striped prompts (8 noise samples
each) at four points of the schedule and prints, over sites, the mean |mu_t - mu_s| / sigma_s
of the pooled (per-image mean) activations. Run:
``.venv/bin/python -m benchmarks.diag_toyworld_separation``
"""

from __future__ import annotations

import torch

import act_core  # noqa: E402
from harness.comfy_env import import_comfy  # noqa: E402
from toyworld.checkpoint import checkpoint_path  # noqa: E402
from toyworld.experiments import fit_combos  # noqa: E402
from toyworld.render import Scene  # noqa: E402


def record(base, sites, conds, sigma: float) -> dict[str, torch.Tensor]:
    with torch.no_grad(), act_core.record_activations(base.diffusion_model, sites) as rec:
        for i, cond in enumerate(conds):
            x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(i)) * sigma
            base.apply_model(x, torch.full((8,), sigma), c_crossattn=cond.expand(8, -1, -1))
    return rec.stacked()


def main() -> None:
    import_comfy()
    import comfy.model_management
    import comfy.sd

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=True, output_clip=True)
    comfy.model_management.load_models_gpu([model])
    base = model.model

    def encode(prompt: str) -> torch.Tensor:
        return clip.encode_from_tokens(clip.tokenize(prompt))

    source = [encode(Scene(c, s).prompt) for c, s in fit_combos()]
    target = [encode(Scene(c, s, "striped").prompt) for c, s in fit_combos()]
    sites = act_core.resolve_sites(base.diffusion_model, "norms")
    sampling = base.model_sampling
    for pct in (0.0, 0.3, 0.6, 0.9):
        sigma = float(sampling.sigma_max) if pct == 0 else float(sampling.percent_to_sigma(pct))
        a, b = record(base, sites, source, sigma), record(base, sites, target, sigma)
        d = sorted(((b[k].mean(0) - a[k].mean(0)).abs() / (a[k].std(0) + 1e-6)).mean().item()
                   for k in a)
        print(f"schedule {pct:.1f} (sigma {sigma:.2f}): standardized distance over "
              f"{len(d)} sites: median {d[len(d) // 2]:.3f}, max {d[-1]:.3f}")


if __name__ == "__main__":
    main()
