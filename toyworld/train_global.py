"""Stage 2 of the toy checkpoint: the prompt reaches the UNet as one code for the whole image.

Stage 1 (``toyworld.train``) learns ordinary cross-attention: each image position attends to
the prompt's tokens in its own way, so the UNet can draw a style as a pattern that depends on
position. Per-channel maps (AcT's) cannot carry such a signal (docs/results_toyworld.md, "Why
stripes fail"). Real text-to-image models also receive the prompt as a *global* code: SDXL
adds the pooled text embedding to every ResBlock's timestep embedding, and a trained CLIP
spreads the whole prompt over its end and padding tokens, which attract much of the attention
at every position. This stage gives the toy UNet that global route, and only it:

- in every cross-attention (``attn2``) the query and key projections are set to zero, so the
  attention weights are uniform and the output is the same at every position: the mean of the
  value projections of the 77 tokens. The prompt then changes each channel by a constant;
- the value projection is scaled up (``GAIN``; the mean over 77 tokens dilutes each word) with
  the output bias compensated, and the parameters of the four spatial transformers are
  fine-tuned from stage 1 (everything else is kept: ResBlocks, VAE, text encoder).

The result is still a stock SD1.5 checkpoint. Only the changed tensors are committed
(``toyworld/weights/act_toyworld_sd15_global.delta.safetensors.xz``, about 16 MB):
``python -m toyworld.checkpoint install`` applies them to stage 1's file.

Run (CPU, about 65 minutes on 2 cores)::

    python -m toyworld.train_global --base models/checkpoints/act_toyworld_sd15_stage1.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from harness.comfy_env import import_comfy

from . import train
from .checkpoint import patch_tensors, sha256_bytes
from .render import all_scenes

log = logging.getLogger("toyworld.train_global")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
GAIN = 8.0     # value projection scale: a word is 1 of 77 tokens in the uniform mean
STEPS = 2400
LR = 3e-4


def transformer_prefixes(unet: torch.nn.Module) -> tuple[str, ...]:
    """Names (with a trailing dot) of the UNet's spatial transformers, the fine-tuned part."""
    from comfy.ldm.modules.attention import SpatialTransformer

    return tuple(f"{n}." for n, m in unet.named_modules() if isinstance(m, SpatialTransformer))


def is_zeroed(name: str) -> bool:
    """The cross-attention query and key weights, set to zero and kept there."""
    return ".attn2.to_q." in name or ".attn2.to_k." in name


def make_attention_uniform_(unet: torch.nn.Module, mean_context: torch.Tensor,
                            gain: float = GAIN) -> None:
    """Zero every ``attn2``'s query and key, scale its value by ``gain`` and shift its output
    bias so that the prompts' mean context (768,) gives the same output as before scaling."""
    with torch.no_grad():
        for name, m in unet.named_modules():
            if not name.endswith(".attn2"):
                continue
            m.to_q.weight.zero_()
            m.to_k.weight.zero_()
            m.to_q.weight.requires_grad_(False)
            m.to_k.weight.requires_grad_(False)
            mean_value = m.to_v.weight @ mean_context  # (inner,)
            m.to_v.weight.mul_(gain)
            m.to_out[0].bias.sub_(m.to_out[0].weight @ ((gain - 1) * mean_value))


def load_stage1(path: Path, seed: int):
    """Stage 1's UNet and VAE (float32) and the raw checkpoint tensors."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    unet = train.build_unet(seed)
    unet.load_state_dict({k[len(UNET_PREFIX):]: v.float() for k, v in sd.items()
                          if k.startswith(UNET_PREFIX)})
    vae = train.build_vae(seed)
    vae.load_state_dict({k[len(VAE_PREFIX):]: v.float() for k, v in sd.items()
                         if k.startswith(VAE_PREFIX)})
    return unet, vae


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="stage 1's checkpoint")
    ap.add_argument("--out", type=Path,
                    default=Path("models/checkpoints/act_toyworld_sd15.safetensors"))
    ap.add_argument("--delta", type=Path,
                    default=Path("models/act_toyworld_sd15_global.delta.safetensors"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--variants", type=int, default=48, help="renders per prompt")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(train.THREADS)
    torch.set_flush_denormal(True)
    import_comfy()
    from safetensors.torch import save

    unet, vae = load_stage1(args.base, args.seed)
    images, scene_idx = train.render_dataset(args.variants, args.seed)
    with torch.no_grad():
        raw = train.encode_images(vae, torch.from_numpy(images))
        latents = train.SD15_LATENT_SCALE * (raw / vae.vae_scale + vae.vae_shift)
    prompts = [s.prompt for s in all_scenes()]
    conds = train.encode_prompts_with_comfyui(args.base, prompts + [""])  # (73, 77, 768)
    make_attention_uniform_(unet, conds[:-1].mean((0, 1)))
    tuned = transformer_prefixes(unet)

    def trainable(name: str) -> bool:
        return name.startswith(tuned) and not is_zeroed(name)

    unet = train.train_unet(latents, conds[:-1], scene_idx, conds[-1], args.steps,
                            args.seed + 1, lr=args.lr, unet=unet, trainable=trainable,
                            warmup=50)
    delta = {UNET_PREFIX + k: v.detach().to(torch.float16).contiguous()
             for k, v in unet.state_dict().items() if k.startswith(tuned)}
    info = {"stage": 2, "base_sha256": sha256_bytes(args.base.read_bytes()), "seed": args.seed,
            "steps": args.steps, "lr": args.lr, "gain": GAIN, "torch": torch.__version__,
            "threads": train.THREADS}
    blob = save(delta, metadata={"act_toyworld": json.dumps(info, sort_keys=True)})
    args.delta.parent.mkdir(parents=True, exist_ok=True)
    args.delta.write_bytes(blob)
    final = patch_tensors(args.base.read_bytes(), delta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(final)
    log.info("wrote %s (%d tensors, sha256 %s) and %s (sha256 %s)", args.delta, len(delta),
             sha256_bytes(blob), args.out, sha256_bytes(final))


if __name__ == "__main__":
    main()
