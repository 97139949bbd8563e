"""The slider panel's picture: each slider's strength over the sampling progress.

Pure PIL + torch (no ComfyUI import): ``(label, function of percent)`` pairs in, an IMAGE tensor
(1, H, W, 3) float in [0, 1] out, for a Preview Image node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["curves_image"]

_BG, _AXIS, _TEXT = (250, 250, 250), (120, 120, 120), (20, 20, 20)
_COLOURS = ((40, 90, 200), (220, 110, 20), (30, 150, 70), (190, 40, 60), (120, 70, 170),
            (20, 150, 170))


def curves_image(curves: Sequence[tuple[str, Callable[[float], float]]], width: int = 480,
                 height: int = 240, samples: int = 101) -> torch.Tensor:
    """Draw strength (y, from 0 to the largest value, at least 1) against progress (x, 0 = the
    first step, 1 = the last). Returns a (1, H, W, 3) float tensor."""
    values = [[fn(k / (samples - 1)) for k in range(samples)] for _, fn in curves]
    top = max([1.0, *(v for row in values for v in row)])
    image = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(image)
    left, right, up, base = 36, width - 10, 22 + 12 * len(curves), height - 22
    draw.text((6, 4), "AcT sliders: strength over sampling progress", fill=_TEXT)
    for i, (label, _) in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        draw.line((8, 24 + 12 * i, 24, 24 + 12 * i), fill=colour, width=3)
        draw.text((30, 18 + 12 * i), label[:60], fill=colour)
    draw.line((left, base, right, base), fill=_AXIS)
    draw.line((left, up, left, base), fill=_AXIS)
    draw.text((left - 30, up - 6), f"{top:.2g}", fill=_AXIS)
    draw.text((left - 12, base - 6), "0", fill=_AXIS)
    draw.text((left, base + 6), "first step", fill=_AXIS)
    draw.text((right - 48, base + 6), "last step", fill=_AXIS)
    span_x, span_y = right - left, base - up
    for i, row in enumerate(values):
        colour = _COLOURS[i % len(_COLOURS)]
        offset = i  # a pixel apart, so that equal curves stay visible
        points = [(left + span_x * k / (samples - 1), base - offset - span_y * v / top)
                  for k, v in enumerate(row)]
        draw.line(points, fill=colour, width=2)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).unsqueeze(0)
