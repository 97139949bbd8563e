"""How far each text's first token stands out at every site of SmolLM2 (the attention sink).

For every site of the given presets, records each text's tokens (no padding) and reports, per
layer, the largest |activation| of the first token and of all the other tokens, and the standard
deviation of the per-text means (what the fitting pools; the largest over the units) with and
without the first token. The project's 100 neutral sentences are the texts by default.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.llm_first_token \
        --out benchmarks/results/llm_first_token.json
"""

from __future__ import annotations

import argparse

import torch

from act_core import hf
from act_core.hf import data
from benchmarks.llm_common import finish, load_model, setup


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["mlp_out", "attn_out", "post_norms"])
    p.add_argument("--data", default="concept:football",
                   help="built-in pair whose SOURCE texts are recorded (football: the neutral "
                        "sentences)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


@torch.no_grad()
def site_stats(model, tokenizer, texts, sites) -> list[dict]:
    """Per site: max |x| on first / other tokens, std of per-text means with / without it."""
    acts: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    handles = [model.get_submodule(s).register_forward_hook(
        lambda _m, _i, out, s=s: acts[s].append(out[0].float())) for s in sites]
    try:
        for text in texts:  # one at a time: no padding to mask
            model(**tokenizer(text, return_tensors="pt"))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for site in sites:
        first = torch.stack([a[0] for a in acts[site]])               # (texts, D)
        rest = torch.cat([a[1:] for a in acts[site]])                  # (tokens, D)
        with_first = torch.stack([a.mean(0) for a in acts[site]])
        without = torch.stack([a[1:].mean(0) for a in acts[site]])
        rows.append({"site": site, "first max|x|": first.abs().max().item(),
                     "others max|x|": rest.abs().max().item(),
                     "largest unit std of text means, with first": with_first.std(0).max().item(),
                     "the same, without": without.std(0).max().item()})
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    model, tokenizer = load_model()
    texts, _ = data.load_builtin(args.data)
    rows = []
    for preset in args.presets:
        rows += site_stats(model, tokenizer, texts, [s.name for s in hf.lm_sites(model, preset)])
    return finish(args, rows, ["site", "first max|x|", "others max|x|",
                               "largest unit std of text means, with first", "the same, without"])


if __name__ == "__main__":
    main()
