"""LinEAS against Linear-AcT on SmolLM2 by activations alone: the held-out closed share.

Fits both on the first ``--n`` toxicity:paired texts and their pairs (32 + 32) and reports
:func:`act_core.hf.lineas.heldout_closed` on the other pairs and on the fitting ones, at the
support q0.05-0.95 and unbounded (1 = the steered source matches the target at every site,
below 0 = further from it than without maps). No generation: minutes on a CPU.

    nice -n 5 .venv/bin/python -m benchmarks.llm_lineas_heldout --steps 100
    # the reduced run of docs/results.md: --layers 8 --sites post_norms --steps 40
"""

from __future__ import annotations

import argparse
import json
import time

from act_core import hf
from act_core.hf import data
from act_core.hf.lineas import fit_lm_lineas, heldout_closed
from act_core.lineas import LineasConfig
from benchmarks.llm_common import setup


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", default="post_norms+mlp_out+attn_out")
    p.add_argument("--layers", type=int, default=0, help="keep only the first N layers (0: all)")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=32)
    args = p.parse_args(argv)
    setup()
    model, tok = hf.load_causal_lm("smollm2")
    if args.layers:
        model.model.layers = model.model.layers[: args.layers]
        model.config.num_hidden_layers = args.layers
    source, target = data.load_builtin("toxicity:paired")
    fit_s, fit_t = source[: args.n], target[: args.n]
    held_s, held_t = source[args.n:], target[args.n:]
    sites = hf.lm_sites(model, args.sites.split("+"))
    rows = []

    def report(name: str, maps: dict, seconds: float) -> None:
        row = {"fit": name, "sites": len(sites), "seconds": round(seconds, 1)}
        for support in ("q0.05-0.95", "unbounded"):
            for part, (s, t) in (("held", (held_s, held_t)), ("fit", (fit_s, fit_t))):
                row[f"{part} {support}"] = round(heldout_closed(
                    model, tok, maps, s, t, support=support, max_length=args.max_length), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)

    start = time.perf_counter()
    maps = hf.fit_lm(model, tok, fit_s, fit_t, [str(s) for s in sites], method="linear_act",
                     incremental=False, max_length=args.max_length)
    report("linear_act, all at once", maps, time.perf_counter() - start)
    start = time.perf_counter()
    config = LineasConfig(steps=args.steps, lr=args.lr, batch_size=args.batch)
    fitted = fit_lm_lineas(model, tok, fit_s, fit_t, sites, lineas=config,
                           max_length=args.max_length)
    report(f"lineas, lr {args.lr}, {args.steps} steps, batch {args.batch}", fitted.maps,
           time.perf_counter() - start)
    return rows


if __name__ == "__main__":
    main()
