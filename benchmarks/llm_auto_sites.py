"""What ``act fit --sites auto`` chooses on SmolLM2-135M-Instruct for the built-in data, against
the configurations docs/llm.md chose on dev by toxicity, concept rate and perplexity.

For each data set: the candidates' held-out scores (:mod:`act_core.hf.auto`; fitting texts only,
no generation, no dev or eval prefixes), at the support the docs/llm.md protocol applies that
kind of map with (toxicity q0.05-0.95, concepts unbounded), maps fitted all at once.

``ACT_CACHE_DIR=/tmp/act_cache python -m benchmarks.llm_auto_sites`` (about 8 minutes on 2 CPU
cores) writes benchmarks/results/llm_auto_sites.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: data set -> (support, the configuration docs/llm.md chose on dev)
DATA = {
    "toxicity:paired": ("q0.05-0.95", "post_norms + mlp_out + attn_out"),
    "toxicity": ("q0.05-0.95", "attn_out (the first dev choice, 2026-11-21)"),
    "concept:football": ("unbounded", "attn_out"),
    "concept:space": ("unbounded", "attn_out"),
    "concept:computers": ("unbounded", "attn_out"),
    "concept:medicine": ("unbounded", "attn_out"),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=list(DATA))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/llm_auto_sites.json")
    args = ap.parse_args(argv)
    from act_core.hf import data, load_causal_lm
    from act_core.hf.auto import choose_lm_sites

    model, tokenizer = load_causal_lm("smollm2")
    rows = []
    for name in args.data:
        support, dev_choice = DATA[name]
        source, target = data.load_builtin(name)
        start = time.perf_counter()
        _, selection = choose_lm_sites(model, tokenizer, source, target, support=support)
        rows.append({"data": name, "support": support, "dev_choice": dev_choice,
                     "seconds": round(time.perf_counter() - start, 1),
                     **selection.as_dict(), "warnings": list(selection.warnings)})
        print(f"{name} ({support}; dev chose {dev_choice}):\n{selection.text()}", flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
