"""Diagnostic: can a spatially uniform change at the cross-attention outputs draw stripes?

The prompt reaches the toy UNet's image features only through its four cross-attentions
(``attn2``). This script samples the 6 held-out plain prompts of the style experiment (2 noise
seeds each, euler, 20 steps, cfg 5, its own loop over ComfyUI's sigmas) and runs the striped
version of each prompt beside it, on the same latents, at every step. At each ``attn2.to_out.0``
it then replaces the plain prompt's output by:

* ``none``: itself (the plain image);
* ``full``: the striped prompt's output (the whole difference, position by position);
* ``uniform xK``: itself plus K times the spatial mean of the difference, i.e. the best change
  of this image at this step that is the same at every position, which is the kind of change
  a per-channel map makes (K = 1, 2, 4).

It prints the fraction of striped images (``evaluation.metrics``) for each and writes a grid.
Usage: ``.venv/bin/python -m benchmarks.diag_toyworld_oracle [--checkpoint PATH]
[--out docs/images/diag_oracle_grid.png]`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

from evaluation.grids import save_grid  # noqa: E402
from evaluation.metrics import read_image  # noqa: E402
from harness.comfy_env import import_comfy  # noqa: E402
from toyworld.checkpoint import checkpoint_path  # noqa: E402
from toyworld.experiments import style_experiment  # noqa: E402

STEPS, CFG, SEEDS, NOISE_SEED = 20, 5.0, 2, 7
SETTINGS = (("none", 0.0), ("full", None), ("uniform x1", 1.0), ("uniform x2", 2.0),
            ("uniform x4", 4.0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a toy checkpoint (default: the installed one)")
    parser.add_argument("--out", type=Path, default=None, help="grid PNG to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.samplers
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(args.checkpoint or checkpoint_path()), output_vae=True, output_clip=True)
    base = model.model
    unet, sampling = base.diffusion_model, base.model_sampling

    def encode(prompt: str) -> torch.Tensor:
        return clip.encode_from_tokens(clip.tokenize(prompt)).float()

    prompts = [s.prompt for s in style_experiment().heldout]
    plain = torch.cat([encode(p) for p in prompts for _ in range(SEEDS)])
    striped = torch.cat([encode(p.replace("a ", "a striped ", 1))
                         for p in prompts for _ in range(SEEDS)])
    uncond = encode("").expand(len(plain), -1, -1)
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", STEPS)
    gain: list[float | None] = [0.0]

    def hook(_module, _inputs, out):
        n = out.shape[0] // 3  # batch: plain, striped, unconditional
        diff = out[n:2 * n] - out[:n]
        if gain[0] is not None:
            diff = gain[0] * diff.mean(1, keepdim=True)
        out = out.clone()
        out[:n] += diff
        return out

    hooks = [m.register_forward_hook(hook) for name, m in unet.named_modules()
             if name.endswith("attn2.to_out.0")]
    rows, results = [], {}
    try:
        for label, k in SETTINGS:
            gain[0] = k
            x = torch.randn(len(plain), 4, 8, 8,
                            generator=torch.Generator().manual_seed(NOISE_SEED)) * sigmas[0]
            with torch.no_grad():
                for i in range(STEPS):
                    sigma = sigmas[i]
                    x_in = torch.cat([x / (sigma ** 2 + 1).sqrt()] * 3)
                    eps = unet(x_in, sampling.timestep(sigma).expand(len(x_in)),
                               context=torch.cat([plain, striped, uncond]))
                    e_plain, _, e_uncond = eps.chunk(3)
                    x = x + (sigmas[i + 1] - sigma) * (e_uncond + CFG * (e_plain - e_uncond))
                pixels = vae.decode(base.process_latent_out(x))
            images = (pixels.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            results[label] = float(np.mean([read_image(im).style == "striped" for im in images]))
            rows.append(list(images))
            print(f"{label}: striped {results[label]:.2f} ({len(images)} images)", flush=True)
    finally:
        for h in hooks:
            h.remove()
    print(json.dumps(results))
    if args.out:
        save_grid(rows, [label for label, _ in SETTINGS], args.out)


if __name__ == "__main__":
    main()
