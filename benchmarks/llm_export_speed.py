"""Decoding speed of an exported (folded) checkpoint against the unsteered model, on a GPU or CPU.

SmolLM2-135M's architecture (LlamaConfig from its config values) with random weights: speed does
not depend on the values. Maps with a slope and a shift on all 120 sites of the toxicity row
(``post_norms`` + ``mlp_out`` + ``attn_out``) are folded at lambda = 0.5 (biases switched on in
q/k/v/o and gate/up/down), and the folded model is checked against the hooked one (logits, greedy
tokens). Then greedy decoding, batch 1, a fixed number of new tokens, rounds alternating between
the unsteered, the folded and the hooked model; medians of tokens per second::

    python -m benchmarks.llm_export_speed --device cuda --dtype bfloat16 --out $OUT/speed.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from act_core import MapSet, TransportMap
from act_core.hf import lm_sites, steering
from act_core.hf.export import fold_lm
from benchmarks.timing import alternate, median

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
               bos_token_id=1, eos_token_id=2, pad_token_id=2)
TINY = {**SMOLLM2, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}


def _maps(model, gen: torch.Generator) -> MapSet:
    maps = {}
    for site in lm_sites(model, ["post_norms", "mlp_out", "attn_out"]):
        d = model.config.hidden_size
        levels = torch.linspace(-3, 3, 13).unsqueeze(1).expand(13, d).contiguous()
        maps[str(site)] = TransportMap(
            scale=0.9 + 0.2 * torch.rand(d, generator=gen),
            shift=0.05 * torch.randn(d, generator=gen), lo=-3 * torch.ones(d),
            hi=3 * torch.ones(d), quantiles=levels, method="bench")
    return MapSet(maps, {"support": "unbounded"})


def _decode(model, ids, new_tokens, maps=None) -> list[int]:
    with torch.no_grad(), steering(model, maps, 0.5, "unbounded"):
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=2)
    return out[0, ids.shape[1]:].tolist()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--tiny", action="store_true", help="a 4-layer model (a quick check)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--prompts", type=int, default=20, help="greedy-equality prompts")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**(TINY if args.tiny else SMOLLM2))).eval()
    maps = _maps(model, gen)
    folded = fold_lm(model, maps, 0.5).eval()
    dtype = getattr(torch, args.dtype)
    model, folded = model.to(args.device, dtype), folded.to(args.device, dtype)
    prompts = [torch.randint(3, model.config.vocab_size, (1, 12), generator=gen).to(args.device)
               for _ in range(args.prompts)]
    with torch.no_grad(), steering(model, maps, 0.5, "unbounded"):
        hooked_logits = model(prompts[0]).logits.float()
    with torch.no_grad():
        folded_logits = folded(prompts[0]).logits.float()
    same = sum(_decode(folded, ids, 32) == _decode(model, ids, 32, maps) for ids in prompts)
    n, ids = args.new_tokens, prompts[0]
    clocks = alternate({"plain": lambda: _decode(model, ids, n),
                        "folded": lambda: _decode(folded, ids, n),
                        "hooked": lambda: _decode(model, ids, n, maps)},
                       args.rounds, device=torch.device(args.device))  # one warm-up call each
    times = {k: [n / t.wall for t in v] for k, v in clocks.items()}  # tokens per second
    med = {k: median(v) for k, v in times.items()}
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "dtype": args.dtype, "sites": len(maps), "tiny": args.tiny,
              "logits_max_abs_diff": float((hooked_logits - folded_logits).abs().max()),
              "logits_scale": float(hooked_logits.abs().max()),
              "greedy_identical": same, "prompts": len(prompts), "tokens_per_s": times,
              "median": med, "ratio_folded": med["folded"] / med["plain"],
              "ratio_hooked": med["hooked"] / med["plain"]}
    print(json.dumps({k: v for k, v in result.items() if k != "tokens_per_s"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
