"""``act``: fit Activation Transport maps on a language model and generate with a strength.

The console script of the package (``act = act_core.hf.cli:main``). Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from act_core.errors import ActError
from act_core.estimators import ESTIMATORS
from act_core.hf.cli_data import add_data_parser, cmd_data
from act_core.hf.cli_export import add_export_parser, cmd_export
from act_core.hf.cli_strength import add_strength_parser, cmd_strength
from act_core.lineas import INITS
from act_core.support import (
    FROM_MAPS,
    check_support_choice,
    is_from_maps,
    parse_support,
    resolve_support,
)
from act_core.units import UNIT_STATS, check_unit_method

__all__ = ["build_parser", "lineas_config", "main"]

log = logging.getLogger("act")

_DESCRIPTION = """\
Activation Transport (AcT): learn maps that carry a model's activations on SOURCE texts onto
those on TARGET texts, then generate with the maps applied at a strength lambda
(0 = the model as it is, 1 = fully transported).

quick start (offline, with the built-in SmolLM2-135M-Instruct and data):
  act data                                            # list the built-in text pairs
  act fit --model smollm2 --data toxicity:paired --sites post_norms mlp_out attn_out \\
      --all-at-once -o detox.safetensors
  act generate --model smollm2 --maps detox.safetensors --strength 1 --support q0.05-0.95 \\
      --prompt "I can't believe you are such a"
  act fit --model smollm2 --data concept:football -o football.safetensors
  act generate --model smollm2 --maps football.safetensors --support unbounded \\
      --prompt "Once upon a time" --num-samples 4
  act strength --model smollm2 --maps football.safetensors --support unbounded \\
      --prompt "Once upon a time"                     # perplexity by strength, a suggestion
  act export --model smollm2 --maps football.safetensors --strength 1 -o smollm2-football/

your own data: two text files, one example per line:
  act fit --model ./my-model --source plain.txt --target polite.txt -o polite.safetensors

models: 'smollm2' (built in, offline) or a folder saved with transformers' save_pretrained.
"""


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2",
                   help="'smollm2' (offline SmolLM2-135M-Instruct) or a transformers model folder "
                        "(default: %(default)s)")


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit maps from source and target texts and save them",
                       description="Fit one transport map per site and save them as a "
                                   "safetensors map file (with the model recorded in it).")
    _add_model(p)
    src = p.add_argument_group("data (either --data, or --source and --target)")
    src.add_argument("--data", help="built-in pair, see 'act data' (e.g. toxicity:paired)")
    src.add_argument("--source", type=Path, help="text file, one source example per line")
    src.add_argument("--target", type=Path, help="text file, one target example per line")
    p.add_argument("-o", "--output", type=Path, required=True, help="map file to write")
    p.add_argument("--sites", nargs="+", default=["attn_out"],
                   help="a preset (attn_out, post_norms, layernorms, mlp_out) or patterns: "
                        "globs or 're:<regex>' over module names (default: attn_out, the "
                        "attention output projections; see docs/llm.md for why); auto: the "
                        "presets scored on held-out texts, the best kept")
    p.add_argument("--support", default="minmax",
                   help="the support recorded in the file, which act generate and act strength "
                        "apply unless given another: minmax (default; mitigation), unbounded "
                        "(induction; LinEAS learns its maps unbounded), or q0.05-0.95")
    p.add_argument("--auto-support", default=None, help="--sites auto: score at this "
                   "support (default: --support's)")
    p.add_argument("--method", default="linear_act",
                   choices=(*ESTIMATORS, "lineas"),
                   help="estimator; lineas learns every site jointly, end to end, through the "
                        "model (LinEAS; its options below)")
    lin = p.add_argument_group("lineas")
    lin.add_argument("--lineas-steps", type=int, default=100, help="Adam steps (default 100)")
    lin.add_argument("--lineas-batch", type=int, default=8,
                     help="source texts per step; bounds the memory (default 8)")
    lin.add_argument("--lineas-lr", type=float, default=0.01,
                     help="learning rate, in (omega - 1) and target standard deviations per "
                          "step (default 0.01: 0.1 threw SmolLM2 off, docs/results.md)")
    lin.add_argument("--lineas-decay", type=float, default=1.0,
                     help="the learning rate falls along a cosine to lr * this (default 1)")
    lin.add_argument("--lineas-init", choices=INITS, default="identity",
                     help="start at the identity (default) or at every site's own Linear-AcT "
                          "map, which the end-to-end steps then correct")
    lin.add_argument("--lineas-shift-only", action="store_true",
                     help="learn shifts only (every scale held at 1)")
    lin.add_argument("--sparsity", type=float, default=0.0,
                     help="group penalty that switches off unneeded sites (default 0)")
    lin.add_argument("--l1", type=float, default=0.0,
                     help="per-unit penalty that switches off unneeded units (default 0)")
    lin.add_argument("--seed", type=int, default=0, help="order of the source batches")
    p.add_argument("--all-at-once", action="store_true",
                   help="fit every site from one pass (faster) instead of incrementally")
    p.add_argument("--stages", type=int, default=None,
                   help="incremental fitting in N stages of sites (default: one per site)")
    p.add_argument("--unit-z", type=float, default=0.0, metavar="Z",
                   help="keep a unit's map only where the source and target means differ by "
                        "more than Z standard errors; other units are left alone (less "
                        "perplexity cost, and less effect per strength: check with act "
                        "strength; default 0: every unit; not with lineas)")
    p.add_argument("--unit-stat", choices=UNIT_STATS, default="welch",
                   help="the statistic --unit-z reads: welch (default; two samples) or paired "
                        "(the differences of pairs: line i of the target is line i of the "
                        "source rewritten, as in toxicity:paired and concept:NAME:paired)")
    p.add_argument("--skip-first-token", action="store_true",
                   help="leave each text's first token out of fitting and unchanged when "
                        "steering (the attention-sink token; recorded in the map file, which "
                        "'act generate' reads)")
    p.add_argument("--gate", nargs="?", const="token", choices=("token", "prefix", "sequence"),
                   default=None,
                   help="also learn a gate from the same texts. token / prefix (the bare flag: "
                        "token): one gate per site, steering each token in proportion to how "
                        "source-like it (or the text up to it) looks (map format 2). sequence: "
                        "one gate for the whole set, read after --reader-layers decoder "
                        "layers, that leaves a sequence exactly unchanged unless one of its "
                        "tokens passes (map format 3, 4 with --gate-pooling draft; "
                        "docs/llm.md). Older act_core refuses gated files; gated maps do not "
                        "export")
    p.add_argument("--reader-layers", type=int, default=None,
                   help="--gate sequence: read the residual stream after this many decoder "
                        "layers (default 2, chosen on SmolLM2's dev prefixes)")
    p.add_argument("--gate-quantile", type=float, default=1.0,
                   help="--gate sequence: threshold at this quantile of the training target "
                        "tokens' scores (default 1: above every one of them)")
    p.add_argument("--gate-margin", type=float, default=0.1,
                   help="--gate sequence: raise the threshold by this many standard deviations "
                        "of the training target tokens' scores (default 0.1, chosen on dev)")
    p.add_argument("--gate-pooling", choices=("draft", "max", "prompt"), default="draft",
                   help="--gate sequence: draft (default) looks ahead: 'act generate' writes "
                        "each continuation unsteered, and again with the maps where the prompt "
                        "or that draft passes; max steers from the first token that passes; "
                        "prompt steers a whole prompt in which one passes (docs/llm.md)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64, help="tokens per example (truncation)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text with maps applied at a strength",
                       description="Continue prompts, optionally with a map file applied.")
    _add_model(p)
    p.add_argument("--maps", type=Path, action="append", default=[],
                   help="map file from 'act fit' (omit for no steering); repeat it to apply "
                        "several together, sequentially in the given order at each site")
    p.add_argument("--strength", type=float, action="append", default=[],
                   help="lambda >= 0: 0 = unchanged, 1 = fully transported (default: 1); "
                        "one for all map files, or one per --maps in the same order")
    p.add_argument("--support", default=FROM_MAPS,
                   help="where maps apply: 'from maps' (default: what act fit --support "
                        "recorded, minmax for older files), minmax (mitigation), unbounded "
                        "(induction), or quantiles such as q0.05-0.95")
    p.add_argument("--gate", choices=("learned", "off"), default="learned",
                   help="learned (default): use the map file's gate when it has one (fitted "
                        "with 'act fit --gate'); off: steer every token, ignoring the gates")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts", type=Path, help="text file of prompts, one per line")
    p.add_argument("--num-samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--json", action="store_true",
                   help="print JSON lines instead of text, each with 'steered': whether the "
                        "maps wrote it (false: the unsteered model's text, e.g. where a "
                        "look-ahead sequence gate did not pass)")


def build_parser() -> argparse.ArgumentParser:
    """The ``act`` argument parser (fit, generate, strength, export, info, sites, data)."""
    parser = argparse.ArgumentParser(prog="act", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub)
    _add_generate(sub)
    add_strength_parser(sub, _add_model)
    add_export_parser(sub, _add_model)
    info = sub.add_parser("info", help="show what a map file contains")
    info.add_argument("path", type=Path)
    sites = sub.add_parser("sites", help="list the sites a preset or pattern names on a model")
    _add_model(sites)
    sites.add_argument("--sites", nargs="+", default=["attn_out"],
                       help="a preset or patterns (default: attn_out)")
    add_data_parser(sub, _add_model)
    return parser


def _texts(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    from act_core.hf import data

    if args.data:
        if args.source or args.target:
            raise SystemExit("act fit: give either --data or --source/--target, not both")
        source, target = data.load_builtin(args.data)
        return source, target, args.data
    if not (args.source and args.target):
        raise SystemExit("act fit: give --data NAME, or both --source FILE and --target FILE")
    for path in (args.source, args.target):
        if not path.is_file():
            raise SystemExit(f"act fit: no such file: {path}")
    return data.read_lines(args.source), data.read_lines(args.target), "files"


def lineas_config(args: argparse.Namespace) -> Any:
    """The :class:`~act_core.lineas.LineasConfig` of ``act fit --method lineas``'s options."""
    from act_core.lineas import LineasConfig

    return LineasConfig(steps=args.lineas_steps, batch_size=args.lineas_batch, lr=args.lineas_lr,
                        decay=args.lineas_decay, group=args.sparsity, l1=args.l1, seed=args.seed,
                        init=args.lineas_init, scale=not args.lineas_shift_only)


def _check_units(args: argparse.Namespace, n_source: int, n_target: int) -> None:
    """Refuse a bad ``--unit-z`` / ``--unit-stat`` before the model loads."""
    try:
        check_unit_method(args.unit_z, args.method, "--unit-z")
    except ActError as error:
        raise SystemExit(f"act fit: {error}") from error
    if args.unit_stat == "paired" and not args.unit_z:
        raise SystemExit("act fit: --unit-stat paired is the statistic of --unit-z; give "
                         "--unit-z Z as well")
    if args.unit_stat == "paired" and n_source != n_target:
        raise SystemExit(f"act fit: --unit-stat paired needs one target line per source line "
                         f"(line i of the target rewrites line i of the source); got "
                         f"{n_source} source and {n_target} target lines")


def _cmd_fit(args: argparse.Namespace) -> int:
    from act_core import hf

    source, target, name = _texts(args)
    if len(source) < 2 or len(target) < 2:
        raise SystemExit("act fit: need at least 2 source and 2 target examples")
    _check_units(args, len(source), len(target))
    parse_support(args.support)  # a typo fails here, before the model loads and the fit runs
    model, tokenizer = hf.load_causal_lm(args.model)
    sites, selection = args.sites[0] if len(args.sites) == 1 else args.sites, None
    if args.sites == ["auto"]:  # lineas: the candidates are scored with Linear-AcT's maps
        from act_core.hf.auto import choose_lm_sites
        chosen, selection = choose_lm_sites(
            model, tokenizer, source, target, support=args.auto_support or args.support,
            method="linear_act" if args.method == "lineas" else args.method,
            max_length=args.max_length, batch_size=args.batch_size,
            skip_first_token=args.skip_first_token)
        sites = list(chosen)
        print(selection.text())  # measured: act fit has 2 texts a side, so some are held out
    from act_core.diagnose import diagnose

    log.info("fitting %s on %d source and %d target examples", args.method, len(source),
             len(target))
    lineas = lineas_config(args) if args.method == "lineas" else None
    samples: dict = {}
    maps = hf.fit_lm(model, tokenizer, source, target, sites, method=args.method,
                     incremental=not args.all_at_once, stages=args.stages,
                     batch_size=args.batch_size, max_length=args.max_length,
                     progress=sys.stderr.isatty(), skip_first_token=args.skip_first_token,
                     lineas=lineas, samples=samples, unit_z=args.unit_z,
                     unit_stat=args.unit_stat,
                     gate=args.gate if args.gate in ("token", "prefix") else False)
    if args.unit_z:  # units whose map is not the identity
        kept = sum(int(m.moved_units.sum()) for m in maps.values())
        stat = " (paired)" if args.unit_stat == "paired" else ""
        print(f"--unit-z {args.unit_z:g}{stat}: {kept} of {sum(m.dim for m in maps.values())} "
              "units keep a map; the others are left alone")
    words: dict = {}  # the words a sequence gate learns from (act info shows them)
    if args.gate == "sequence":
        from act_core.hf import gating
        from act_core.mapset import MapSet
        layers = gating.DEFAULT_READER_LAYERS if args.reader_layers is None else args.reader_layers
        gate = gating.fit_lm_sequence_gate(model, tokenizer, source, target, layers,
                                           max_length=args.max_length,
                                           quantile=args.gate_quantile, margin=args.gate_margin,
                                           pooling=args.gate_pooling)
        maps = MapSet(maps, {}, gate)
        words = gating.gate_words(tokenizer, source, target, args.max_length)
        log.info("%s%s", gate.describe(), "\n" + gating.describe_gate_words(words) if words else "")
    diagnosis = diagnose(samples["source"], samples["target"], maps, samples.get("transported"))
    meta = {"data": name, "sites": sites if selection else args.sites, "gate": args.gate or "off",
            "incremental": not args.all_at_once, **({"gate_words": words} if words else {}),
            "stages": args.stages, "diagnosis": diagnosis.as_dict(),
            **({"unit_z": args.unit_z, "unit_stat": args.unit_stat, "units_kept": kept}
               if args.unit_z else {}),
            **({"auto": selection.as_dict()} if selection else {}),
            **({"lineas": vars(lineas)} if lineas else {})}
    hf.save_lm_maps(args.output, maps, model, source_texts=source, target_texts=target,
                    metadata=meta, skip_first_token=args.skip_first_token,
                    support=args.support)
    from act_core.info import gate_report

    gates, gate_warnings = gate_report(maps)
    print(diagnosis.text() + (f"\n{gates}" if gates else ""))
    for warning in [*(selection.warnings if selection else ()), *diagnosis.warnings,
                    *gate_warnings]:
        log.warning("%s", warning)
    print(f"wrote {len(maps)} maps ({args.method}) to {args.output}; what each strength costs: "
          f"act strength --model {args.model} --maps {args.output}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from act_core import hf
    from act_core.hf import data
    from act_core.hf.generate import draft_gate, generate

    prompts = list(args.prompt) + (data.read_lines(args.prompts) if args.prompts else [])
    if not prompts:
        raise SystemExit("act generate: give at least one --prompt TEXT or --prompts FILE")
    strengths = args.strength or [1.0]
    if len(strengths) not in (1, max(len(args.maps), 1)):
        raise SystemExit(f"act generate: give one --strength, or one per --maps "
                         f"({len(args.maps)}), found {len(strengths)}")
    check_support_choice(args.support)  # a typo fails here, before the model loads
    model, tokenizer = hf.load_causal_lm(args.model)
    sets = [hf.load_lm_maps(path, model) for path in args.maps]
    if sets:
        from act_core.gate import select_gate

        sets = [select_gate(one, args.gate) for one in sets]
    support = resolve_support(args.support, [one.support for one in sets])
    if sets and is_from_maps(args.support):
        print(f"act generate: support {support}, as the map file records", file=sys.stderr)
    maps = None if not sets else sets[0] if len(sets) == 1 else sets
    strength = strengths[0] if len(strengths) == 1 else strengths
    drafting, fired = draft_gate(maps, strength), 0
    for sample in range(args.num_samples):
        texts, steered = generate(
            model, tokenizer, prompts, maps, strength, support, return_steered=True,
            max_new_tokens=args.max_new_tokens, seed=args.seed + 1000 * sample,
            do_sample=not args.greedy, progress=sys.stderr.isatty())
        fired += sum(steered)
        for prompt, text, on in zip(prompts, texts, steered, strict=True):
            print(json.dumps({"prompt": prompt, "sample": sample, "text": text, "steered": on})
                  if args.json else f"[{sample}] {prompt}{text}")
    if drafting is not None:
        rest = ("with the maps; the others are the unsteered model's text" if len(sets) == 1
                else "with its maps too; the others are the other maps' text")
        print(f"act generate: the sequence gate read {fired} of {len(prompts) * args.num_samples} "
              f"continuations as the source and wrote them {rest}", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from act_core.info import describe_maps
    from act_core.mapfile import load_maps

    print(describe_maps(load_maps(args.path), args.path))
    return 0


def _cmd_sites(args: argparse.Namespace) -> int:
    from act_core import hf

    model, _ = hf.load_causal_lm(args.model)
    for site in hf.lm_sites(model, args.sites[0] if len(args.sites) == 1 else args.sites):
        print(site)
    return 0


_COMMANDS = {"fit": _cmd_fit, "generate": _cmd_generate, "strength": cmd_strength,
             "export": cmd_export, "info": _cmd_info, "sites": _cmd_sites, "data": cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``act`` command line; returns the exit status (errors: 2, with the fix)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status = _COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a reader that left early is caught below
        return status
    except ActError as error:
        print(f"act {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `act info maps.safetensors | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
