"""Diagnostic: is the plain -> striped difference a per-channel shift or a spatial pattern?

Samples 6 plain and the same 6 striped toy-world prompts (2 seeds each) with ComfyUI's own
sampler (euler, 20 steps, cfg 5), records every norm site of the UNet on the conditional half at
steps 4 and 10, and splits the mean difference D = mean(target) - mean(source), a (C, H, W)
field per site, into its spatially uniform part (what per-channel maps can move: the channel
mean) and its row-parity part (the stripes of the toy world lie on the latent grid). Prints,
per site, |uniform| / |D| and |row parity| / |D|. Run:
``.venv/bin/python -m benchmarks.diag_toyworld_spatial``
"""

from __future__ import annotations

import torch

from harness.comfy_env import import_comfy  # noqa: E402
from toyworld.checkpoint import checkpoint_path  # noqa: E402
from toyworld.experiments import fit_combos  # noqa: E402
from toyworld.render import Scene  # noqa: E402

STEPS_AT = (4, 10)


def main() -> None:
    import_comfy()
    import comfy.sample
    import comfy.sd
    from comfy.patcher_extension import WrappersMP

    import act_core
    from act_core.sites import find_module

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=True, output_clip=True)
    net = model.get_model_object("diffusion_model")
    sites = act_core.resolve_sites(net, "norms")
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))

    def record(prompts: list[str]) -> dict[tuple[int, str], torch.Tensor]:
        store: dict[tuple[int, str], list[torch.Tensor]] = {}
        step = [0]

        def wrapper(executor, x, t, *args, **kwargs):
            options = args[-1] if args else kwargs.get("transformer_options", {})
            k, step[0] = step[0], step[0] + 1
            if k not in STEPS_AT:
                return executor(x, t, *args, **kwargs)
            chunk = x.shape[0] // len(options["cond_or_uncond"])
            first = options["cond_or_uncond"].index(0) * chunk
            hooks = []
            for site in sites:
                def hook(_module, _inputs, out, key=str(site)):
                    out = out.detach()[first:first + chunk]
                    if out.ndim == 3:  # (B, H*W, C) tokens of a transformer block
                        side = int(out.shape[1] ** 0.5)
                        out = out.transpose(1, 2).reshape(out.shape[0], -1, side, side)
                    store.setdefault((k, key), []).append(out)
                hooks.append(find_module(net, site).register_forward_hook(hook))
            try:
                return executor(x, t, *args, **kwargs)
            finally:
                for h in hooks:
                    h.remove()

        patched = model.clone()
        patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "diag", wrapper)
        for prompt in prompts:
            for seed in (1000, 1001):
                step[0] = 0
                latent = torch.zeros(1, 4, 8, 8)
                noise = comfy.sample.prepare_noise(latent, seed)
                comfy.sample.sample(patched, noise, 20, 5.0, "euler", "normal",
                                    clip.encode_from_tokens_scheduled(clip.tokenize(prompt)),
                                    negative, latent, seed=seed, disable_pbar=True)
        return {key: torch.cat(rows) for key, rows in store.items()}

    source = record([Scene(c, s).prompt for c, s in fit_combos()])
    target = record([Scene(c, s, "striped").prompt for c, s in fit_combos()])
    for key in source:
        diff = target[key].mean(0) - source[key].mean(0)  # (C, H, W)
        uniform = diff.mean((1, 2), keepdim=True).expand_as(diff)
        parity = torch.tensor([(-1.0) ** i for i in range(diff.shape[1])]).view(1, -1, 1)
        rows = ((diff - uniform) * parity).mean((1, 2), keepdim=True) * parity
        norm = float(diff.norm())
        print(f"step {key[0]:2d} {key[1]:48s} uniform {uniform.norm() / norm:.2f} "
              f"row parity {rows.norm() / norm:.2f}")


if __name__ == "__main__":
    main()
