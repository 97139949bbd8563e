"""Write docs/families.md: what AcT's ``auto`` sites are on every ComfyUI model family.

For every entry of ``comfy.supported_models.models`` with a tiny recipe (harness/family_recipes.py)
this builds the model with ComfyUI's classes, learns maps with AcT Learn Transport's defaults
(as tests/test_families_matrix.py does), counts the sites by kind, checks that strength 0 is
bit-identical and strength 1 changes a 2-step sample, tries folded mode on the affine norms
inside the blocks, and learns by LinEAS (3 steps) to see that its gradient reaches every
site. The text encoders of harness/encoder_recipes.py get their sites per encoder and a LinEAS
fit at the text node's defaults; every CLIP class ComfyUI's CLIP loaders build gets its sites
per encoder (benchmarks/clip_loaders_table.py).
Entries without a recipe are listed with their reason. The pass/fail columns are re-measured
here; the full matrix (save/load, foreign maps) is the test suite's.

    python -m benchmarks.families_table --out docs/families.md
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

from act_core.diagnose import Diagnosis
from harness.comfy_env import import_comfy, import_pack

ROOT = Path(__file__).resolve().parent.parent


def _sample(model, case) -> torch.Tensor:
    import comfy.sample

    from harness.family_recipes import flat

    noise = comfy.sample.prepare_noise(case["latent"], 7)
    return flat(comfy.sample.sample(model, noise, 2, 2.0, "euler", "normal", case["positive"],
                                    case["negative"], case["latent"], seed=7, disable_pbar=True))


def _kinds(maps, chosen: str) -> str:
    modes = Counter(m.mode for m in maps.values())
    counts = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
    return f"{chosen}: {len(maps)} ({counts})"


def _fold_status(nodes, case) -> str:
    try:
        maps = _learn(nodes, case, "block norms (structure)")
    except LookupError:
        return "no: no affine norm spans the blocks' features"
    try:
        folded = nodes.apply.patch_model(case["model"], maps, 1.0, apply_to="both",
                                         support="unbounded", mode="folded")
    except ValueError as error:
        text = str(error)
        if "RMSNorm" in text:
            return f"no: {len(maps)} norms, RMSNorm (no bias to absorb the shift)"
        if "channel means" in text:
            return f"no: {len(maps)} norms, GroupNorm maps with ω ≠ 1 (mean_act folds)"
        return "no: " + text.split(", and here ")[-1].split("; use mode")[0]
    hooks = nodes.apply.patch_model(case["model"], maps, 1.0, apply_to="both",
                                    support="unbounded")
    expected = _sample(hooks, case)
    error = float((_sample(folded, case) - expected).abs().max())
    effect = float((expected - case["baseline"]).abs().max())
    exact = error <= min(1e-3, 1e-2 * effect)
    return f"{'yes' if exact else 'NOT EXACT'}: {len(maps)} norms (max error {error:.1e})"


def _learn(nodes, case, sites: str = "auto"):
    return nodes.learn.learn_maps(case["model"], case["source"], case["target"], sites=sites,
                                  support="unbounded", latent={"samples": case["latent"]},
                                  seed=3, samples_per_prompt=2, incremental=False)


def family_row(nodes, recipes, name: str) -> str:
    recipe = recipes.RECIPES[name]
    gen = torch.Generator().manual_seed(1)
    model = recipes.build(recipe)
    case = {"model": model, "source": recipes.conds(recipe, 3, gen),
            "target": recipes.conds(recipe, 3, gen, shift=0.5),
            "positive": recipes.conds(recipe, 1, gen)[0],
            "negative": recipes.conds(recipe, 1, gen)[0],
            "latent": recipes.latent(recipe)}
    diffusion_model = model.get_model_object("diffusion_model")
    arch = nodes.families.arch_of(diffusion_model)
    maps = _learn(nodes, case)
    measured = (maps.metadata.get("extra") or {}).get("auto")  # auto chose among presets
    chosen = (f"measured: {measured['chosen']}" if measured else
              "preset " + next(iter(nodes.families.SITE_PRESETS[arch]))
              if arch in nodes.families.SITE_PRESETS else "block outputs (structure)")
    case["baseline"] = _sample(model, case)
    zero = torch.equal(_sample(nodes.apply.patch_model(model, maps, 0.0), case),
                       case["baseline"])
    one = _sample(nodes.apply.patch_model(model, maps, 1.0), case)
    changed = not torch.allclose(one, case["baseline"], rtol=1e-3, atol=1e-3)
    video = "video" if name in recipes.VIDEO else "image"
    status = (f"λ=0 {'identical' if zero else 'DIFFERS'}, "
              f"λ=1 {'changes' if changed else 'NO CHANGE'}")
    return (f"| {name} | {type(diffusion_model).__name__} | {video} | {_kinds(maps, chosen)} "
            f"| yes | {status} | {_fold_status(nodes, case)} | {_lineas_status(nodes, case)} |")


def _lineas_status(nodes, case) -> str:
    from act_core.lineas import LineasConfig

    try:
        with torch.inference_mode():
            maps, report = nodes.learn.learn_and_diagnose(
                case["model"], case["source"], case["target"], method="lineas",
                support="unbounded", latent={"samples": case["latent"]}, seed=3,
                samples_per_prompt=2, lineas=LineasConfig(steps=3, batch_size=2, lr=0.1))
    except ValueError as error:
        return "no: " + str(error).split(": ", 1)[-1].split("; choose")[0]
    moved = sum(bool((m.scale != 1).any()) for m in maps.values())
    before, after = report.separation, report.remaining
    return f"yes: {moved}/{len(maps)} sites, separation {before:.3g} -> {after:.3g}"


def encoder_row(clip_nodes, encoders, family: str) -> str:
    if encoders.needs_transformers4(family):  # its tokenizer: in a subprocess with 4.57.6
        return _encoder_row_with_transformers4(family)
    clip = encoders.build_clip(family)
    cells = []
    for preset in ("layer outputs", "final norm", "layer norms"):
        try:
            _, sites = clip_nodes.choose_text_sites(clip, preset, "", "all",
                                                    'a red circle, "sun"')  # ByT5: quoted text
        except LookupError:  # SiteError: an encoder without a final norm
            cells.append("none")
            continue
        per = Counter(str(s).split(".", 1)[0] for s in sites)
        cells.append(", ".join(f"{enc} {n}" for enc, n in per.items()))
    names = ", ".join(clip_nodes.encoders_of(clip))
    model = type(clip.cond_stage_model).__name__
    cells.append(_encoder_lineas(clip_nodes, encoders, clip))
    return f"| {family} | {model} | {names} | " + " | ".join(cells) + " |"


def _encoder_lineas(clip_nodes, encoders, clip) -> str:
    """LinEAS at the text node's defaults: the summed separation before and after its maps."""
    with torch.inference_mode():
        maps = clip_nodes.learn_text_maps(clip, encoders.MATRIX_SOURCE, encoders.MATRIX_TARGET,
                                          "layer outputs", "", "lineas", "unbounded")
    report = Diagnosis.from_dict(maps.metadata["extra"]["diagnosis"])
    before, after = report.separation, report.remaining
    return f"{before:.3g} -> {after:.3g} ({after / before:.0%} left)"


def _encoder_row_with_transformers4(family: str) -> str:
    """The row of ``family`` computed by this script in a subprocess whose PYTHONPATH starts
    with transformers 4.57.6 (harness.encoder_recipes.TRANSFORMERS4_DIR)."""
    from harness.encoder_recipes import TRANSFORMERS4_DIR

    path = os.pathsep.join([str(TRANSFORMERS4_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-m", "benchmarks.families_table", "--encoder-row",
                             family], cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
                            capture_output=True, text=True, timeout=600, check=True)
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "families.md"))
    parser.add_argument("--encoder-row", help="print this text-encoder row only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    import_comfy()
    pack = import_pack()
    nodes = type("Nodes", (), {})()
    for part in ("learn", "apply", "families", "clip"):
        setattr(nodes, part, importlib.import_module(f"{pack.__name__}.nodes.{part}"))
    import comfy.supported_models

    from harness import encoder_recipes as encoders
    from harness import family_recipes as recipes

    if args.encoder_row:
        print(encoder_row(nodes.clip, encoders, args.encoder_row))
        return

    order = [m.__name__ for m in comfy.supported_models.models]
    rows = [family_row(nodes, recipes, n) for n in order if n in recipes.RECIPES]
    blocked = [f"| {n} | {recipes.BLOCKED[n]} |" for n in order if n in recipes.BLOCKED] or [
        "| (none) | every image and video entry passes |"]
    excluded = [f"| {n} | {recipes.EXCLUDED[n]} |" for n in order if n in recipes.EXCLUDED]
    text_rows = [encoder_row(nodes.clip, encoders, f) for f in encoders.ENCODERS]
    from benchmarks import clip_loaders_table
    from harness import clip_rows

    loader_rows = clip_rows.rows()
    loaders = {"type_rows": "\n".join(clip_loaders_table.type_rows(loader_rows)),
               "class_rows": "\n".join(clip_loaders_table.class_rows(nodes.clip, loader_rows)),
               "class_count": len(loader_rows),
               **{f"loader_{how}_count": sum(e["how"] == how for e in loader_rows.values())
                  for how in ("named", "generated", "gap", "excluded")}}
    Path(args.out).write_text(_document(rows, blocked, excluded, text_rows, len(order),
                                        loaders))
    print(args.out)


def _document(rows, blocked, excluded, text_rows, total: int, loaders: dict) -> str:
    template = (ROOT / "benchmarks" / "families_template.md").read_text()
    return template.format(**loaders,
        total=total, passing=len(rows), blocked_count=sum("(none)" not in b for b in blocked),
        excluded_count=len(excluded), rows="\n".join(rows), blocked="\n".join(blocked),
        excluded="\n".join(excluded), text_rows="\n".join(text_rows))


if __name__ == "__main__":
    main()
