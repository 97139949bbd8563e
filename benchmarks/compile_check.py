"""Does AcT Apply Transport work under ComfyUI's torch.compile (TorchCompileModel)?

A tiny SDXL-architecture UNet (ComfyUI's classes, random weights) is compiled the way ComfyUI's
TorchCompileModel node does it (``comfy_api.torch_helpers.set_torch_compile_wrapper``), then
sampled (euler, 4 steps, cfg 2) plain and with AcT maps in hooks mode, and with the maps folded.
Prints: whether the compiled samples equal the eager ones (within float tolerance), and how many
graphs dynamo compiled and how often it recompiled for each variant.

Usage: ``.venv/bin/python -m benchmarks.compile_check`` (CPU, inductor). On a GPU, CUDA graphs
too: ``python -m benchmarks.compile_check --device cuda --backend cudagraphs`` or ``--backend
inductor --mode reduce-overhead`` (inductor's CUDA graph trees).
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch._dynamo

from benchmarks.bench_realsize import init_random
from benchmarks.toy_inprocess import _pack, reference_sites
from harness.comfy_env import import_comfy

SDXL_TINY = dict(image_size=32, in_channels=4, out_channels=4, model_channels=32,
                 num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[0, 1],
                 transformer_depth_output=[0, 0, 1, 1], transformer_depth_middle=1,
                 context_dim=64, use_linear_in_transformer=True, use_spatial_transformer=True,
                 legacy=False, num_classes="sequential", adm_in_channels=2816,
                 use_temporal_resblock=False, use_temporal_attention=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import_comfy()
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    pack = _pack()
    config = comfy.supported_models.SDXL(dict(SDXL_TINY))
    model = config.get_model({})
    device = torch.device(args.device)
    model.diffusion_model.to(device)
    init_random(model.diffusion_model, 0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device,
                                               offload_device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)

    def conds(n, shift=0.0):
        return [[[torch.randn(1, 7, 64, generator=gen) + shift,
                  {"pooled_output": torch.randn(1, 1280, generator=gen)}]] for _ in range(n)]

    source, target = conds(3), conds(3, 0.5)
    (positive,), (negative,) = conds(1), conds(1)
    latent = torch.zeros(1, 4, 8, 8)
    learn, apply = pack.nodes.learn, pack.nodes.apply
    reference = reference_sites(pack, patcher)
    maps = learn.learn_maps(patcher, source, target, support="unbounded", sites=reference,
                            latent={"samples": latent}, seed=3, samples_per_prompt=2)
    mean = learn.learn_maps(patcher, source, target, method="mean_act", support="unbounded",
                            sites=reference,
                            latent={"samples": latent}, seed=3, samples_per_prompt=2)

    def sample(m):
        noise = comfy.sample.prepare_noise(latent, 7)
        return comfy.sample.sample(m, noise, 4, 2.0, "euler", "normal", positive, negative,
                                   latent, seed=7, disable_pbar=True)

    variants = {"plain": lambda m: m, "hooks": lambda m: apply.patch_model(m, maps, 1.0),
                "folded": lambda m: apply.patch_model(m, mean, 1.0, apply_to="both",
                                                      mode="folded")}
    for name, make in variants.items():
        eager = sample(make(patcher))
        compiled = patcher.clone()
        set_torch_compile_wrapper(compiled, backend=args.backend, mode=args.mode)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        try:
            out = sample(make(compiled))
            counters = torch._dynamo.utils.counters
            close = torch.allclose(out, eager, rtol=1e-3, atol=1e-3)
            print(f"{args.device} {args.backend} {args.mode or ''} {name}: compiled == eager: "
                  f"{close} (max diff "
                  f"{float((out - eager).abs().max()):.2e}); graphs compiled "
                  f"{counters['stats'].get('unique_graphs', 0)}, recompiles "
                  f"{sum(counters['recompiles'].values())}, graph breaks "
                  f"{sum(counters['graph_break'].values())}", flush=True)
        except Exception as error:  # the answer is the failure itself
            print(f"{name}: compiled run failed: {type(error).__name__}: {error}"[:6000],
                  flush=True)


if __name__ == "__main__":
    main()
