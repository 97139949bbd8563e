"""Labelled picture grids of sampled images (rows of prompts, columns of seeds or strengths)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_grid"]


def save_grid(rows: list[list[np.ndarray]], labels: list[str], path: Path, scale: int = 2,
              col_labels: list[str] | None = None) -> None:
    """Write a labelled grid: one row per label, images left to right."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    label_w, top = 230, (16 if col_labels else 0)
    ncol = max(len(r) for r in rows)
    canvas = Image.new("RGB", (label_w + ncol * w * scale, top + len(rows) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for j, lab in enumerate(col_labels or []):
        draw.text((label_w + j * w * scale + 4, 2), lab, fill="black")
    for i, (row, label) in enumerate(zip(rows, labels)):
        y = top + i * h * scale
        draw.text((4, y + h * scale // 2 - 6), label, fill="black")
        for j, img in enumerate(row):
            tile = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + j * w * scale, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
