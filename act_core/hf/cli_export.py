"""``act export``: fold maps at a strength into a checkpoint or a llama.cpp control vector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from act_core.support import parse_support

__all__ = ["add_export_parser", "cmd_export"]


def add_export_parser(sub, add_model) -> None:
    """The ``export`` subcommand's parser (``add_model`` adds the shared ``--model``)."""
    p = sub.add_parser(
        "export", help="fold maps at a strength into a checkpoint or a llama.cpp control vector",
        description="Fold maps at a fixed strength into the model's weights. 'transformers': a "
                    "checkpoint folder of the model's own architecture (biases switched on in its "
                    "config where a shift needs one) that plain AutoModelForCausalLM."
                    "from_pretrained loads, and serving engines that read transformers "
                    "checkpoints run at no extra cost. 'control-vector': a llama.cpp control-"
                    "vector GGUF (pure shifts on the feed-forward outputs only). Maps that do "
                    "not fold exactly are refused with the reason (see docs/export.md).")
    add_model(p)
    p.add_argument("--maps", type=Path, required=True, help="map file from 'act fit'")
    p.add_argument("--strength", type=float, default=1.0,
                   help="lambda folded in (default: 1); a control vector can be rescaled "
                        "later with llama.cpp's --control-vector-scaled")
    p.add_argument("--support", default="unbounded",
                   help="only 'unbounded' folds exactly (default: %(default)s, whatever the "
                        "file records: the command says when they differ)")
    p.add_argument("--format", choices=("transformers", "control-vector"),
                   default="transformers", help="what to write (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="checkpoint folder, or .gguf file for a control vector")


def cmd_export(args: argparse.Namespace) -> int:
    from act_core import hf
    from act_core.mapfile import load_maps

    if args.format == "control-vector":
        from act_core.hf.gguf_export import write_control_vector

        maps = load_maps(args.maps)
        hint = (maps.metadata.get("model") or {}).get("family") or "llama"
        path = write_control_vector(args.output, maps, args.strength, support=args.support,
                                    model_hint=hint)
        print(f"wrote {len(maps)} control vectors (lambda {args.strength:g}) to {path}")
        _differs(maps.support, args.support)
        return 0
    from act_core.hf.export import export_checkpoint

    model, tokenizer = hf.load_causal_lm(args.model)
    maps = hf.load_lm_maps(args.maps, model)
    out = export_checkpoint(model, tokenizer, maps, args.strength, args.output, args.support)
    print(f"wrote a {type(model).__name__} checkpoint with {len(maps)} maps folded in at "
          f"lambda {args.strength:g} to {out}")
    _differs(maps.support, args.support)
    return 0


def _differs(recorded: str, applied: str) -> None:
    """Say when the export applies the maps otherwise than act generate would by default."""
    if str(parse_support(recorded)) != str(parse_support(applied)):
        print(f"act export: note: the map file records support {recorded}, which act generate "
              f"applies by default; the export applies the maps {applied} (only unbounded "
              f"folds), like act generate --support {applied}", file=sys.stderr)
