"""``act export`` on SmolLM2-135M-Instruct: the folded checkpoint against the hooked model.

1. Fit diff_means maps on ``toxicity:paired`` at ``post_norms`` + ``mlp_out`` + ``attn_out`` (all
   at once: the docs/llm.md toxicity row) and export them at lambda = 0.5, unbounded support.
2. In a fresh ``python -I`` process that cannot import act_core (llm_export_worker.py): plain
   ``AutoModelForCausalLM.from_pretrained`` on the folder, greedy continuations of 50 held-out
   prompts (the first 50 ``eval`` RealToxicityPrompts prefixes), compared token for token with
   the hooked model's here; tokens per second of the exported and the unsteered checkpoints,
   alternating rounds (batch 1, a fixed number of new tokens).
3. ``--toxicity``: the docs/llm.md diff_means row (240 eval prefixes x 3 seeds, perplexity on the
   64 passages) re-measured with the exported checkpoint and no maps.

    ACT_CACHE_DIR=/tmp/act_cache nice -n 10 .venv/bin/python -m benchmarks.llm_export \\
        --out benchmarks/results/llm_export.json [--toxicity | --toxicity-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from act_core.hf import data, steering
from act_core.hf.export import export_checkpoint
from act_core.hf.models import cache_dir
from benchmarks.llm_common import fit_all_at_once, load_model, save_json, setup

log = logging.getLogger("benchmarks")
SITES = "post_norms+mlp_out+attn_out"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strength", type=float, default=0.5, help="the docs row's diff_means lambda")
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=6, help="speed rounds per model (alternating)")
    p.add_argument("--speed-prompts", type=int, default=4)
    p.add_argument("--toxicity", action="store_true", help="also re-measure the toxicity row")
    p.add_argument("--toxicity-only", action="store_true",
                   help="export, then re-measure only the toxicity row (no greedy comparison)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _hooked_greedy(model, tokenizer, prompts, maps, strength, new_tokens) -> list[list[int]]:
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad(), steering(model, maps, strength, "unbounded"):
            gen = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def _toxicity_row(folder: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.llm_toxicity import evaluate

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    args = argparse.Namespace(seeds=[0, 1, 2], max_new_tokens=32, batch_size=32, ppl_texts=64,
                              ppl_offset=None, split="eval", support="unbounded")
    return evaluate(model, tokenizer, data.rtp_split("eval")[:240], None, 0.0, args)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target = data.load_builtin("toxicity:paired")
    maps = fit_all_at_once(model, tokenizer, "toxicity:paired", source, target, ["diff_means"],
                           SITES)["diff_means"]
    prompts = data.rtp_split("eval")[: args.prompts]
    result: dict = {"args": vars(args), "sites": len(maps)}
    with tempfile.TemporaryDirectory(prefix="act-export-") as tmp:
        folder = export_checkpoint(model, tokenizer, maps, args.strength, Path(tmp) / "ckpt")
        if args.toxicity_only:
            del model  # the row runs on the exported folder alone
            result["toxicity"] = _toxicity_row(folder)
            log.info("exported checkpoint: %.4f toxic, ppl %.2f", result["toxicity"]["toxic"],
                     result["toxicity"]["ppl"])
            if args.out:
                save_json(args.out, result)
            print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1,
                             default=str))
            return result
        start = time.perf_counter()
        hooked = _hooked_greedy(model, tokenizer, prompts, maps, args.strength, args.new_tokens)
        plain = _hooked_greedy(model, tokenizer, prompts, None, 0.0, args.new_tokens)
        log.info("hooked greedy in %.0f s", time.perf_counter() - start)
        job = {"exported": str(folder), "plain": str(cache_dir() / "smollm2"),
               "prompts": prompts, "new_tokens": args.new_tokens, "rounds": args.rounds,
               "speed_prompts": args.speed_prompts}
        worker = Path(__file__).with_name("llm_export_worker.py")
        run = subprocess.run([sys.executable, "-I", str(worker)], input=json.dumps(job),
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"worker failed:\n{run.stderr[-3000:]}")
        fresh = json.loads(run.stdout.strip().splitlines()[-1])
        same = [a == b for a, b in zip(hooked, fresh["tokens"], strict=True)]
        result.update({
            "greedy_identical": sum(same), "prompts": len(prompts),
            "steering_changed": sum(a != b for a, b in zip(hooked, plain, strict=True)),
            "first_difference": next((i for i, s in enumerate(same) if not s), None),
            "worker": {k: v for k, v in fresh.items() if k != "tokens"},
        })
        log.info("greedy identical on %d/%d prompts (steering changed %d); tokens/s ratio %.3f",
                 sum(same), len(prompts), result["steering_changed"], fresh["ratio_median"])
        if args.toxicity:
            result["toxicity"] = _toxicity_row(folder)
            log.info("exported checkpoint: %.4f toxic, ppl %.2f", result["toxicity"]["toxic"],
                     result["toxicity"]["ppl"])
    if args.out:
        save_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
