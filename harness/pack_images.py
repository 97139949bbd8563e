"""Make the pictures the node pack ships: the registry icon and the node help pages' figures.

    python -m harness.pack_images            # all of them (the learn chart needs ComfyUI)
    python -m harness.pack_images --no-comfy # only those cut from committed results

Every picture comes from this project's own results, nothing is drawn by hand:

* ``web/icon.png`` (400 x 400, the ``Icon`` of ``[tool.comfy]``): four cells of
  ``docs/images/act_style_grid.png`` (held-out toy prompts at strength 0 and 1, style maps
  learned by the nodes on the real ComfyUI server);
* ``web/docs/images/style_row.png`` and ``negation_row.png``: one row of the style and negation
  grids (strength 0 ... 1, labelled);
* ``web/docs/images/strength_grid.png``: the style grid, half size;
* ``web/docs/images/one_unit.png``: what one unit's map does, on synthetic source and target
  samples fitted and transported by act_core (histograms at strength 0, 0.5 and 1);
* ``web/docs/images/learn_diagnostics.png``: the learn node's own diagnostics picture, from a
  real learn of the toy style maps (toy checkpoint, in-process ComfyUI, about a minute of CPU).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import act_core

__all__ = ["ICON_SIZE", "main", "make_icon", "make_rows", "make_unit_chart"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
IMAGES = WEB / "docs" / "images"
ICON_SIZE = 400
# geometry of docs/images/act_*_grid.png (evaluation.act_eval): a label column, a header, 128 px
_LABEL_W, _HEADER_H, _CELL = 230, 16, 128


def _cell(grid: Image.Image, row: int, col: int) -> Image.Image:
    x, y = _LABEL_W + col * _CELL, _HEADER_H + row * _CELL
    return grid.crop((x, y, x + _CELL, y + _CELL))


def make_icon(grid_path: Path, out: Path) -> Path:
    """2 x 2 cells of the style grid: two held-out prompts at strength 0 (left) and 1 (right)."""
    grid = Image.open(grid_path).convert("RGB")
    half = ICON_SIZE // 2
    icon = Image.new("RGB", (ICON_SIZE, ICON_SIZE), (255, 255, 255))
    for i, row in enumerate((4, 1)):  # a yellow circle, a green circle
        for j, col in enumerate((0, 4)):  # strength 0, strength 1
            tile = _cell(grid, row, col).resize((half, half), Image.Resampling.LANCZOS)
            icon.paste(tile, (j * half, i * half))
    icon.save(out, optimize=True)
    return out


def _row(grid_path: Path, row: int) -> Image.Image:
    grid = Image.open(grid_path).convert("RGB")
    header = grid.crop((_LABEL_W, 0, grid.width, _HEADER_H))
    cells = grid.crop((_LABEL_W, _HEADER_H + row * _CELL, grid.width,
                       _HEADER_H + (row + 1) * _CELL))
    out = Image.new("RGB", (cells.width, _HEADER_H + _CELL), (255, 255, 255))
    out.paste(header, (0, 0))
    out.paste(cells, (0, _HEADER_H))
    return out


def make_rows(docs_images: Path, out_dir: Path) -> list[Path]:
    """The labelled strength rows and the half-size style grid."""
    style, negation = docs_images / "act_style_grid.png", docs_images / "act_negation_grid.png"
    paths = [out_dir / "style_row.png", out_dir / "negation_row.png", out_dir / "strength_grid.png"]
    _row(style, 4).save(paths[0], optimize=True)
    _row(negation, 0).save(paths[1], optimize=True)
    grid = Image.open(style).convert("RGB")
    grid.resize((grid.width // 2, grid.height // 2), Image.Resampling.LANCZOS).save(
        paths[2], optimize=True)
    return paths


def make_unit_chart(out: Path, width: int = 600, height: int = 220) -> Path:
    """Histograms of one unit: source (blue), target (green), transported at 0.5 and 1 (orange).

    The samples are synthetic (a narrow source, a wider shifted target, 4000 each); the map is
    fitted with ``act_core.fit`` (linear_act) and applied with ``act_core.transport``.
    """
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(4000, 1, generator=gen) * 0.6                  # (N, 1)
    target = torch.randn(4000, 1, generator=gen) * 1.1 + 3.0            # (M, 1)
    tmap = act_core.fit(source, target, method="linear_act")
    rows = [("source (strength 0)", source, (70, 110, 200)),
            ("strength 0.5", act_core.transport(source, tmap, 0.5, "unbounded"), (240, 170, 90)),
            ("strength 1", act_core.transport(source, tmap, 1.0, "unbounded"), (230, 120, 30)),
            ("target", target, (60, 160, 80))]
    lo, hi, bins = -2.5, 7.5, 50
    image = Image.new("RGB", (width, height * len(rows) // 2), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    band = image.height // len(rows)
    for k, (label, values, colour) in enumerate(rows):
        counts, _ = np.histogram(values.numpy().ravel(), bins=bins, range=(lo, hi))
        top = band * k
        scale = (band - 20) / max(counts.max(), 1)
        bar = (width - 20) / bins
        for b, c in enumerate(counts):
            x = 10 + b * bar
            draw.rectangle((x, top + band - 4 - c * scale, x + bar - 1, top + band - 4),
                           fill=colour)
        draw.text((12, top + 3), label, fill=(20, 20, 20))
        draw.line((10, top + band - 3, width - 10, top + band - 3), fill=(120, 120, 120))
    image.save(out, optimize=True)
    return out


def make_learn_chart(out: Path) -> Path:
    """The learn node's diagnostics picture from a real learn of the toy style maps."""
    from harness.comfy_env import import_pack
    from toyworld.checkpoint import checkpoint_path
    from toyworld.experiments import fit_combos
    from toyworld.render import Scene

    pack = import_pack().__name__
    import comfy.sd

    learn = importlib.import_module(f"{pack}.nodes.learn")
    chart = importlib.import_module(f"{pack}.nodes.chart")
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    source = [Scene(c, s).prompt for c, s in fit_combos()]
    target = [Scene(c, s, "striped").prompt for c, s in fit_combos()]
    _, diagnosis = learn.learn_and_diagnose(
        model, learn.encode_prompts(clip, source), learn.encode_prompts(clip, target),
        source=source, target=target, sites="cross-attention outputs", support="unbounded",
        stages=4, latent={"samples": torch.zeros(1, 4, 8, 8)})  # 64 x 64 px, the toy size
    picture = chart.diagnosis_image(diagnosis)[0].mul(255).round().to(torch.uint8).numpy()
    Image.fromarray(picture).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-comfy", action="store_true",
                        help="skip the learn chart (it needs ComfyUI and the toy checkpoint)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    IMAGES.mkdir(parents=True, exist_ok=True)
    made = [make_icon(ROOT / "docs" / "images" / "act_style_grid.png", WEB / "icon.png"),
            *make_rows(ROOT / "docs" / "images", IMAGES), make_unit_chart(IMAGES / "one_unit.png")]
    if not args.no_comfy:
        made.append(make_learn_chart(IMAGES / "learn_diagnostics.png"))
    for path in made:
        log.info("wrote %s", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
