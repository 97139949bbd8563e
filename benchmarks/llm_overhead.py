"""Generation overhead of maps on SmolLM2-135M-Instruct: tokens/s with maps vs none.

Maps sit on every norm site (``layernorms``: 2 per block + the final norm = 61 sites). The two
configurations alternate within one process for ``--rounds`` rounds (CPU timings drift between
runs; only a ratio measured in one run is meaningful), and the median time of each is compared.
Generation is greedy with exactly ``--new-tokens`` new tokens per sequence.

    nice -n 19 .venv/bin/python -m benchmarks.llm_overhead \
        --out benchmarks/results/llm_overhead.json
"""

from __future__ import annotations

import argparse
import logging

import torch

from act_core import hf
from act_core.hf import data
from benchmarks.llm_common import finish, fit_all_at_once, load_model, setup
from benchmarks.timing import alternate, median

log = logging.getLogger("benchmarks")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", default="layernorms")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--supports", nargs="+", default=["minmax", "unbounded"])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


@torch.inference_mode()
def generate(model, enc, new_tokens: int, pad_id: int) -> None:
    model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, pad_token_id=pad_id)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup(args.threads)
    model, tokenizer = load_model()
    source, target = data.load_builtin("concept:space")
    maps = fit_all_at_once(model, tokenizer, "concept:space", source, target, ["linear_act"],
                           args.sites)["linear_act"]
    prompts = data.read_lines(data.DATA_DIR / "neutral.txt")
    rows = []
    for batch in args.batch_sizes:
        enc = tokenizer(prompts[:batch], return_tensors="pt", padding=True)
        generate(model, enc, 4, tokenizer.pad_token_id)  # warm-up

        def plain(enc=enc):
            generate(model, enc, args.new_tokens, tokenizer.pad_token_id)

        for support in args.supports:
            def steered(support=support, plain=plain):
                with hf.steering(model, maps, 1.0, support):
                    plain()

            times = alternate({"none": plain, "maps": steered}, args.rounds, warmup=False)
            tokens = batch * args.new_tokens
            none_tps = tokens / median(t.wall for t in times["none"])
            maps_tps = tokens / median(t.wall for t in times["maps"])
            rows.append({"batch": batch, "support": support, "sites": len(maps),
                         "tokens/s none": none_tps, "tokens/s maps": maps_tps,
                         "ratio": maps_tps / none_tps})
            log.info("batch %d %s: %.1f vs %.1f tokens/s (ratio %.3f)", batch, support,
                     maps_tps, none_tps, maps_tps / none_tps)
    return finish(args, rows, ["batch", "support", "sites", "tokens/s none", "tokens/s maps",
                               "ratio"])


if __name__ == "__main__":
    main()
