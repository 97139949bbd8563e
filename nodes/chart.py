"""The learn node's "did it do anything, and where?" picture: one bar pair per site.

Pure PIL + torch (no ComfyUI import): a :class:`~act_core.diagnose.Diagnosis` in, an IMAGE
tensor (1, H, W, 3) float in [0, 1] out, for a Preview Image node.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..act_core.diagnose import Diagnosis, short_site

__all__ = ["diagnosis_image"]

_BG, _AXIS, _TEXT = (250, 250, 250), (120, 120, 120), (20, 20, 20)
_BEFORE, _AFTER, _OFF, _WARN = (70, 110, 200), (240, 140, 40), (200, 200, 200), (200, 30, 30)


def _height(value: float, top: float, span: int) -> int:
    """Bar height on a log scale from 0.001 to ``top`` (values below draw nothing)."""
    if value <= 1e-3:
        return 0
    return int(span * min(1.0, math.log10(value / 1e-3) / max(math.log10(top / 1e-3), 1e-6)))


def diagnosis_image(diagnosis: Diagnosis, width: int = 640, height: int = 320,
                    notes: Sequence[str] = (), warnings: Sequence[str] = ()) -> torch.Tensor:
    """Draw the per-site separation (blue) and what is left after the maps (orange).

    Sites whose map is the identity (switched off) get a grey marker under the axis; the
    diagnosis's warnings and ``warnings`` (e.g. the site choice's or the gates') are written
    in red above the chart, ``notes`` (e.g. what auto chose) in black, both wrapped at 114
    characters. Returns a (1, H, W, 3) float tensor.
    """
    sites = diagnosis.sites
    width = max(width, 24 + 3 * len(sites))
    lines = [(line, _TEXT) for note in notes for line in textwrap.wrap(note, 114)]
    lines += [(line, _WARN) for w in (*diagnosis.warnings, *warnings)
              for line in textwrap.wrap(f"W: {w}", 114)]
    top_margin = 34 + 12 * len(lines)
    image = Image.new("RGB", (width, height + top_margin), _BG)
    draw = ImageDraw.Draw(image)
    kept = sum(1 for s in sites if s.kept)
    draw.text((6, 4), f"AcT: source-target separation per site (blue), left after the maps "
                      f"(orange); {kept}/{len(sites)} sites kept (grey: off). Log scale.",
              fill=_TEXT)
    for i, (line, colour) in enumerate(lines):
        draw.text((6, 18 + 12 * i), line, fill=colour)
    base, span = height + top_margin - 16, height - 40
    draw.line((10, base, width - 10, base), fill=_AXIS)
    if not sites:
        draw.text((12, base - 20), "no sites", fill=_WARN)
    else:
        top = max(max(s.separation for s in sites), 1e-2)
        step = (width - 24) / len(sites)
        bar = max(1, int(step / 2) - 1)
        for i, s in enumerate(sites):
            x = int(12 + i * step)
            for offset, value, colour in ((0, s.separation, _BEFORE),
                                          (bar, s.remaining, _AFTER)):
                h = _height(value, top, span)
                if h:
                    draw.rectangle((x + offset, base - h, x + offset + bar - 1, base - 1),
                                   fill=colour)
            if not s.kept:
                draw.rectangle((x, base + 3, x + 2 * bar - 1, base + 8), fill=_OFF)
        draw.text((12, base + 4), short_site(sites[0].site, 40), fill=_AXIS)
        label = short_site(sites[-1].site, 40)
        draw.text((max(12, width - 12 - 6 * len(label)), base + 4), label, fill=_AXIS)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).unsqueeze(0)
