"""AcT at real architecture sizes: apply overhead, learn cost and memory (random weights).

SD1.5, SDXL and Flux.1-dev are built at their published sizes with ComfyUI's own classes
(``comfy.supported_models``, the unet/DiT configurations ``comfy.model_detection`` reads from
the real checkpoints) and filled with seeded random weights: timings need the architecture and
the size, not trained weights. Nothing is downloaded. Every figure runs through ComfyUI's
sampling path (``comfy.sample.sample``, euler) and every ratio is measured in one run, the
variants alternating from repeat to repeat.

Apply overhead, per model, against ``plain`` (no AcT):

* ``hooks``: AcT Apply Transport (``patch_model``, mode hooks) with linear_act maps learned on
  the family's default sites (every norm layer of a UNet: GroupNorms in channel mode,
  LayerNorms in token mode; Flux: the double and single block outputs), strength 1, unbounded
  support, on the conditional CFG half (the node's default);
* ``hooks_both``: the same on both CFG halves;
* ``mean_hooks``: mean_act maps (pure shifts) on the same sites, hooks, both halves;
* ``folded``: the same mean_act maps folded into the norms' affine weights (UNets only: a Flux
  block output is no norm output, so there is nothing to fold into); its largest difference
  from ``mean_hooks`` is reported as the check that folding is exact.

Learn cost: ``learn_maps`` (AcT Learn Transport's function; all at once: one pass over the
target prompts, one over the source prompts, recording and fitting) against the same
denoiser evaluations through the same path with nothing recorded. Peak memory of both (host:
the resident set's high-water mark, reset through ``/proc/self/clear_refs``; device: CUDA's
allocator peak), against the recorded samples' size.

Usage (CPU, the sizes that fit 2 cores and 24 GiB)::

    .venv/bin/python -m benchmarks.bench_realsize --archs sd15 sdxl --size 256 --steps 4

on a GPU (see ``benchmarks/gpu_check.sh``)::

    python -m benchmarks.bench_realsize --device cuda --dtype fp16 --archs sdxl flux --size 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.timing import median, ratios, rotation, timed, write_section
from benchmarks.toy_inprocess import (
    _counting,
    _pack,
    _reset_peak,
    _status_kb,
    plain_passes,
    reference_sites,
)
from harness.comfy_env import import_comfy

logger = logging.getLogger("bench_realsize")
ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench_realsize{tag}: begin -->", "<!-- bench_realsize{tag}: end -->"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SEED = 0

_UNET_COMMON = dict(use_checkpoint=False, image_size=32, out_channels=4, in_channels=4,
                    use_spatial_transformer=True, legacy=False, model_channels=320,
                    use_temporal_attention=False, use_temporal_resblock=False)
# as comfy.model_detection reads them from the real checkpoints (ComfyUI 0.30)
SD15_UNET = dict(_UNET_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4],
                 transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=768,
                 num_heads=8, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
SDXL_UNET = dict(_UNET_COMMON, num_classes="sequential", adm_in_channels=2816,
                 num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10],
                 channel_mult=[1, 2, 4], transformer_depth_middle=10,
                 use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10])
FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768,
                context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
                depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True,
                guidance_embed=True, patch_size=2, txt_ids_dims=[])


@dataclass(frozen=True)
class Arch:
    config: str  # class in comfy.supported_models
    unet_config: dict
    tokens: int  # text tokens per conditioning
    context_dim: int
    pooled_dim: int | None
    latent_channels: int
    cfg: float  # as users run the family: guidance-distilled Flux dev at cfg 1
    cond_extra: dict = field(default_factory=dict)


ARCHS = {
    "sd15": Arch("SD15", SD15_UNET, 77, 768, None, 4, 5.0),
    "sdxl": Arch("SDXL", SDXL_UNET, 77, 2048, 1280, 4, 5.0),
    "flux": Arch("Flux", FLUX_DEV, 256, 4096, 768, 16, 1.0, {"guidance": 3.5}),
}


@torch.no_grad()
def init_random(module: torch.nn.Module, seed: int) -> None:
    """Seeded random weights that keep activations in range: matrices and convolution kernels
    N(0, 1/fan_in), norm scales 1, biases 0. ComfyUI builds layers uninitialised."""
    device = next(module.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def build(arch: Arch, device: torch.device, dtype: torch.dtype):
    """A ModelPatcher of ``arch`` at full size with random weights, on ``device``."""
    import comfy.model_patcher
    import comfy.supported_models

    config = getattr(comfy.supported_models, arch.config)(dict(arch.unet_config))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    model.diffusion_model.to(device=device, dtype=dtype)
    init_random(model.diffusion_model, SEED)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def conds(arch: Arch, n: int, seed: int, shift: float = 0.0) -> list:
    """``n`` CONDITIONING values as a text encoder returns them (seeded random tensors)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        extra = dict(arch.cond_extra)
        if arch.pooled_dim:
            extra["pooled_output"] = torch.randn(1, arch.pooled_dim, generator=gen)
        context = torch.randn(1, arch.tokens, arch.context_dim, generator=gen) + shift
        out.append([[context, extra]])
    return out


def _peaks(device: torch.device) -> tuple[int, int]:
    """Reset the peaks; return the resting (host KiB, device bytes)."""
    rest_host = _reset_peak()
    rest_dev = 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        rest_dev = torch.cuda.memory_allocated(device)
    return rest_host, rest_dev


def _peak_above(rest: tuple[int, int], device: torch.device) -> tuple[float, float]:
    """(host MiB, device MiB) of the peaks above ``rest``."""
    host = (_status_kb("VmHWM") - rest[0]) / 1024
    dev = ((torch.cuda.max_memory_allocated(device) - rest[1]) / 2**20
           if device.type == "cuda" else 0.0)
    return host, dev


def bench_learn(pack, model, arch: Arch, latent: torch.Tensor, n: int, repeats: int,
                device: torch.device) -> tuple[dict, dict]:
    """Learn (all at once) vs its plain denoiser passes; returns (row, {method: maps})."""
    learn = pack.nodes.learn
    source, target = conds(arch, n, 1), conds(arch, n, 2, shift=0.5)
    counted, counter = _counting(model)
    spp = latent.shape[0]

    def run_learn(method: str = "linear_act"):
        return learn.learn_maps(counted, source, target, method=method, support="unbounded",
                                sites=reference_sites(pack, model),
                                incremental=False, latent={"samples": latent},
                                samples_per_prompt=spp, seed=SEED)

    def run_floor():
        plain_passes(counted, target, latent, 100003)
        plain_passes(counted, source, latent, 0)

    maps = {"linear_act": run_learn()}  # warm-up; the maps the apply benchmark uses
    if counter[0] != 2 * n:
        raise RuntimeError(f"learn_maps ran {counter[0]} evaluations, expected {2 * n}")
    maps["mean_act"] = run_learn("mean_act")
    run_floor()
    times: dict[str, list] = {"learn": [], "floor": []}
    for repeat in range(repeats):
        jobs = {"learn": run_learn, "floor": run_floor}
        for name in rotation(list(jobs), repeat):
            times[name].append(timed(jobs[name], device))
    memory = {}
    for name, job in (("floor", run_floor), ("learn", run_learn)):
        try:
            rest = _peaks(device)
        except OSError as error:  # no /proc/self/clear_refs: no peaks, the timings stand
            logger.warning("peak memory not measured: %s", error)
            break
        job()
        memory[name] = _peak_above(rest, device)
    units = sum(m.dim for m in maps["linear_act"].values())
    row = {"n": n, "samples_per_prompt": spp, "evaluations": 2 * n, "times": times,
           "memory_mib": memory, "sites": len(maps["linear_act"]), "units": units,
           "recorded_mib": 2 * n * spp * units * 4 / 2**20}
    logger.info("learn: %s", {k: [f"{t[1]:.2f}" for t in v] for k, v in times.items()})
    return row, maps


def bench_apply(pack, model, arch: Arch, maps: dict, latent: torch.Tensor, steps: int,
                repeats: int, device: torch.device, clock: int) -> dict:
    import comfy.model_management
    import comfy.sample

    apply = pack.nodes.apply
    (positive,), (negative,) = conds(arch, 1, 3), conds(arch, 1, 4)
    noise = comfy.sample.prepare_noise(latent, SEED)
    variants = {
        "plain": model,
        "hooks": apply.patch_model(model, maps["linear_act"], 1.0),
        "hooks_both": apply.patch_model(model, maps["linear_act"], 1.0, apply_to="both"),
        "mean_hooks": apply.patch_model(model, maps["mean_act"], 1.0, apply_to="both"),
    }
    try:
        variants["folded"] = apply.patch_model(model, maps["mean_act"], 1.0, apply_to="both",
                                               mode="folded")
        not_folded = None
    except ValueError as error:
        not_folded = str(error)

    def sample(name: str):
        patched = variants[name]
        comfy.model_management.load_models_gpu([patched])  # untimed: switching clones reloads
        out = []
        seconds = timed(lambda: out.append(comfy.sample.sample(
            patched, noise, steps, arch.cfg, "euler", "simple", positive, negative, latent,
            disable_pbar=True, seed=SEED)), device)
        return seconds, out[0]

    names = list(variants)
    outputs = {name: sample(name)[1].float() for name in names}  # warm-up
    times: dict[str, list] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in rotation(names, repeat):
            times[name].append(sample(name)[0])
    paired = {name: ratios(times[name], times["plain"], clock)[2] for name in names}
    # the sampling thread's CPU time over the wall time: near 1, the host sets the pace
    host_share = {name: median(t.thread / t.wall for t in times[name]) for name in names}
    logger.info("apply ratios: %s; sampling thread busy: %s",
                {k: f"{v:.4f}" for k, v in paired.items()},
                {k: f"{v:.2f}" for k, v in host_share.items()})

    def diff(a: str, b: str) -> float | None:
        """Largest difference of two variants' latents, relative to the largest value."""
        if a not in outputs or b not in outputs:
            return None
        return float((outputs[a] - outputs[b]).abs().max() / outputs[b].abs().max())

    return {"times": times, "ratios": paired, "not_folded": not_folded, "host_share": host_share,
            "plain_seconds": median(t[clock] for t in times["plain"]),
            "checks": {"folded_vs_mean_hooks": diff("folded", "mean_hooks"),
                       "hooks_vs_plain": diff("hooks", "plain")}}


def run_arch(name: str, args: argparse.Namespace, pack) -> dict:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    arch = ARCHS[name]
    if args.flux_depth and name == "flux":  # a shallower Flux, to check the script on a CPU
        arch = dataclasses.replace(arch, unet_config=dict(
            arch.unet_config, depth=args.flux_depth, depth_single_blocks=args.flux_depth))
    start = time.perf_counter()
    model = build(arch, device, dtype)
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    logger.info("%s: %.2f B parameters built in %.1f s", name, params / 1e9,
                time.perf_counter() - start)
    edge = args.size // 8
    clock = 1 if device.type == "cuda" or args.wall else 0
    learn_latent = torch.zeros(args.samples, arch.latent_channels, edge, edge)
    learn_row, maps = bench_learn(pack, model, arch, learn_latent, args.prompts,
                                  args.learn_repeats, device)
    latent = torch.zeros(1, arch.latent_channels, edge, edge)
    apply_row = bench_apply(pack, model, arch, maps, latent, args.steps, args.repeats, device,
                            clock)
    del model, maps
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"arch": name, "parameters": params, "cfg": arch.cfg, "learn": learn_row,
            "apply": apply_row}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    clock = "wall" if args.device == "cuda" or args.wall else "CPU"
    lines = [
        f"Device: **{_device_name(torch.device(args.device))}**, {args.dtype}, {args.size} px, "
        f"{args.steps} euler steps, torch {torch.__version__}; {args.repeats} repeats "
        f"(variants alternating), medians of per-repeat ratios on {clock} time. Learn: "
        f"{args.prompts} + {args.prompts} prompts, {args.samples} samples per prompt, all at "
        "once. Command: `" + args.command + "`.",
        "",
        "| model | params | sites | plain s/image | hooks (cond) | hooks (both) | mean hooks "
        "| folded | learn / its passes | learn extra peak: host, device | recorded samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['arch']} | failed: {row['error']} |")
            continue
        apply, learn = row["apply"], row["learn"]
        r = apply["ratios"]
        folded = (f"{r['folded']:.3f}x (differs {apply['checks']['folded_vs_mean_hooks']:.1e})"
                  if "folded" in r else "n/a: block outputs are no norm outputs")
        lt = learn["times"]
        k = 1 if clock == "wall" else 0
        learn_ratio = ratios(lt["learn"], lt["floor"], k)[2]
        mem = learn["memory_mib"]
        extra = ("not measured" if len(mem) < 2 else
                 f"{mem['learn'][0] - mem['floor'][0]:+.0f} MiB, "
                 f"{mem['learn'][1] - mem['floor'][1]:+.0f} MiB")
        lines.append(
            f"| {row['arch']} (cfg {row['cfg']:g}) | {row['parameters'] / 1e9:.2f} B "
            f"| {learn['sites']} | {apply['plain_seconds']:.2f} | {r['hooks']:.3f}x "
            f"| {r['hooks_both']:.3f}x | {r['mean_hooks']:.3f}x | {folded} "
            f"| {learn_ratio:.3f}x | {extra} "
            f"| {learn['recorded_mib']:.1f} MiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=["sd15", "sdxl"], choices=list(ARCHS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--size", type=int, default=256, help="image edge in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learn-repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per set for learning")
    parser.add_argument("--samples", type=int, default=1, help="noise samples per prompt")
    parser.add_argument("--flux-depth", type=int, default=0,
                        help="double and single blocks of Flux (default: its own 19 and 38)")
    parser.add_argument("--wall", action="store_true", help="ratios of wall time on CPU too")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--docs", help="write the table into docs/results.md under this tag")
    args = parser.parse_args(argv)
    args.command = "python -m benchmarks.bench_realsize " + " ".join(argv or __import__(
        "sys").argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import_comfy(cpu=args.device == "cpu")
    logging.getLogger().setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    pack = _pack()
    rows = []
    for name in args.archs:
        try:
            rows.append(run_arch(name, args, pack))
        except Exception as error:  # one family failing must not lose the others' numbers
            logger.exception("%s failed", name)
            rows.append({"arch": name, "error": f"{type(error).__name__}: {error}"[:300]})
    text = table(rows, args)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "table": text}, indent=1, default=str))
    if args.docs:
        begin, end = (s.format(tag=f" {args.docs}") for s in (BEGIN, END))
        write_section(ROOT / "docs" / "results.md", f"{begin}\n{text}\n{end}\n",
                      begin=begin, end=end)


if __name__ == "__main__":
    main()
