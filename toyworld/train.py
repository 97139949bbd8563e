"""Train stage 1 of the toy-world text-to-image checkpoint (``toyworld.train_global`` is stage 2).

The file is an ordinary SD1.5 checkpoint that ComfyUI's stock CheckpointLoaderSimple loads:
- UNet: ComfyUI's own ``UNetModel`` with SD1.5's width (320 channels, 768-d context) and one
  level (channel_mult [1], one res block, one transformer): detected as SD15, 25.8 M params;
- text encoder: ComfyUI's CLIP-L with every encoder layer zero (each passes its input through),
  so CLIPTextEncode returns LayerNorm(token embedding); only the rows of the ~20 token ids the
  toy prompts use are non-zero (random, from the seed);
- VAE: ComfyUI's TAESD architecture (x8), trained here, with ``vae_scale``/``vae_shift`` set so
  that the latents the UNet sees have mean 0 and std 1.
Everything is drawn by ``toyworld.render`` and trained from scratch, deterministically from the
seed (fixed thread count, CPU). Run: ``python -m toyworld.train --out models/...``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from harness.comfy_env import import_comfy

from .render import all_scenes, render

log = logging.getLogger("toyworld.train")

UNET_CONFIG = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1],
    transformer_depth_middle=1, context_dim=768, num_heads=8, num_head_channels=-1,
    use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, use_temporal_resblock=False, use_temporal_attention=False,
)
SD15_LATENT_SCALE = 0.18215
THREADS = 2


def _init_module_(module: torch.nn.Module) -> None:
    """ComfyUI builds layers uninitialised (disable_weight_init): run torch's own init."""
    for m in module.modules():
        for base in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
                break


def build_unet(seed: int) -> torch.nn.Module:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    unet = UNetModel(**UNET_CONFIG, dtype=torch.float32, device="cpu",
                     operations=comfy.ops.disable_weight_init)
    _init_module_(unet)
    with torch.no_grad():  # the usual zero-init of residual outputs, and of the final conv
        for name, p in unet.named_parameters():
            if name.startswith("out.2.") or ".out_layers.3." in name or ".proj_out." in name:
                p.zero_()
    return unet


def build_vae(seed: int) -> torch.nn.Module:
    import comfy.taesd.taesd as taesd

    torch.manual_seed(seed)
    vae = taesd.TAESD(latent_channels=4)
    _init_module_(vae)
    return vae


def toy_prompts() -> list[str]:
    return [s.prompt for s in all_scenes()]


def build_clip_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """SD1.5 checkpoint keys (``cond_stage_model.*``) of a pass-through CLIP-L."""
    import comfy.sd1_clip

    tokenizer = comfy.sd1_clip.SD1Tokenizer()
    ids: set[int] = set()
    for p in toy_prompts() + [""]:
        for chunk in tokenizer.tokenize_with_weights(p)["l"]:
            ids.update(int(t[0]) for t in chunk)
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    sd = {}
    for k, v in clip.state_dict().items():
        if k.endswith(("text_projection.weight", "logit_scale")):
            continue
        sd["cond_stage_model." + k[len("clip_l."):]] = torch.zeros(v.shape, dtype=torch.float16)
    gen = torch.Generator().manual_seed(seed)
    emb = sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
    rows = sorted(ids)
    emb[rows] = torch.randn(len(rows), emb.shape[1], generator=gen).to(torch.float16)
    sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"].fill_(1.0)
    log.info("text encoder: %d token ids with embeddings: %s", len(rows), rows)
    return sd


def render_dataset(variants: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """(N, 3, 64, 64) float32 images and the scene index of each."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    imgs, idx = [], []
    for _ in range(variants):
        for i, s in enumerate(scenes):
            imgs.append(render(s, 64, rng).transpose(2, 0, 1))
            idx.append(i)
    return np.stack(imgs), idx


def _cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_vae(images: torch.Tensor, steps: int, seed: int, batch: int = 8) -> torch.nn.Module:
    vae = build_vae(seed)
    params = list(vae.taesd_encoder.parameters()) + list(vae.taesd_decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, 1e-3, 50)
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]
        rec = vae.taesd_decoder(vae.taesd_encoder(x))
        # pixels, plus image gradients so that edges, outlines and stripes stay sharp
        loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * (rec - x).abs().mean()
        for d in (2, 3):
            loss = loss + (rec.diff(dim=d) - x.diff(dim=d)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("vae step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(),
                     time.time() - t0)
    return vae


@torch.no_grad()
def encode_images(vae: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.taesd_encoder(images[i:i + 256]) for i in range(0, len(images), 256)])


def set_latent_scaling(vae: torch.nn.Module, raw: torch.Tensor) -> torch.Tensor:
    """Choose vae_scale/shift so ComfyUI's latents (x 0.18215) have mean 0, std 1."""
    scale = float(raw.std()) * SD15_LATENT_SCALE
    shift = -float(raw.mean()) / scale
    with torch.no_grad():
        vae.vae_scale.fill_(scale)
        vae.vae_shift.fill_(shift)
    return SD15_LATENT_SCALE * (raw / scale + shift)


def sd15_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def train_unet(latents, conds, scene_idx, uncond, steps, seed, batch=16, lr=4e-4,
               unet=None, trainable=None, warmup=100):
    """eps-prediction training on (latent, prompt) pairs with 10% unconditional dropout.

    A fresh UNet from ``seed`` unless ``unet`` is given; ``trainable(name)`` picks the
    parameters the optimiser updates (default: all). Returns the EMA of the weights.
    """
    unet = unet if unet is not None else build_unet(seed)
    params = [p for n, p in unet.named_parameters() if trainable is None or trainable(n)]
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    acp = sd15_alphas_cumprod()
    gen = torch.Generator().manual_seed(seed + 2)
    idx = torch.tensor(scene_idx)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, warmup)
        pick = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[pick]
        ctx = conds[idx[pick]].clone()
        drop = torch.rand(batch, generator=gen) < 0.1
        ctx[drop] = uncond
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(xt, t.float(), context=ctx), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        if step % 50 == 0 or step == steps - 1:
            log.info("unet step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(),
                     time.time() - t0)
    unet.load_state_dict(ema)
    return unet


def assemble(unet, vae, clip_sd) -> dict[str, torch.Tensor]:
    sd = {"model.diffusion_model." + k: v.detach().to(torch.float16).contiguous()
          for k, v in unet.state_dict().items()}
    for k, v in vae.state_dict().items():
        dtype = torch.float32 if k in ("vae_scale", "vae_shift") else torch.float16
        sd["first_stage_model." + k] = v.detach().to(dtype).contiguous()
    sd.update(clip_sd)
    return sd


def encode_prompts_with_comfyui(ckpt: Path, prompts: list[str]) -> torch.Tensor:
    """Encode prompts exactly as ComfyUI's CheckpointLoaderSimple + CLIPTextEncode would."""
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(ckpt), output_vae=True, output_clip=True)
    kind = type(model.model.model_config).__name__
    if kind != "SD15":
        raise RuntimeError(f"ComfyUI detected the toy checkpoint as {kind}, expected SD15")
    out = [clip.encode_from_tokens(clip.tokenize(p)).float() for p in prompts]
    return torch.cat(out)


def save_checkpoint(sd: dict[str, torch.Tensor], path: Path, info: dict) -> str:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"act_toyworld": json.dumps(info, sort_keys=True)})
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path,
                    default=Path("models/checkpoints/act_toyworld_sd15_stage1.safetensors"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--unet-steps", type=int, default=2400)
    ap.add_argument("--variants", type=int, default=48, help="renders per prompt")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    import_comfy()

    images, scene_idx = render_dataset(args.variants, args.seed)
    images = torch.from_numpy(images)
    vae = train_vae(images, args.vae_steps, args.seed)
    latents = set_latent_scaling(vae, encode_images(vae, images))
    log.info("latents %s mean %.3f std %.3f", tuple(latents.shape), latents.mean(), latents.std())

    clip_sd = build_clip_state_dict(args.seed)
    prompts = toy_prompts()
    probe = args.out.with_name("_probe_" + args.out.name)
    save_checkpoint(assemble(build_unet(args.seed), vae, clip_sd), probe, {})
    conds = encode_prompts_with_comfyui(probe, prompts + [""])
    probe.unlink()
    unet = train_unet(latents, conds[:-1], scene_idx, conds[-1], args.unet_steps, args.seed)
    info = {"seed": args.seed, "vae_steps": args.vae_steps, "unet_steps": args.unet_steps,
            "variants": args.variants, "torch": torch.__version__, "threads": THREADS}
    digest = save_checkpoint(assemble(unet, vae, clip_sd), args.out, info)
    log.info("wrote %s sha256 %s", args.out, digest)


if __name__ == "__main__":
    main()
