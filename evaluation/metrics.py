"""Read a toy-world image back: colour, shape, style and black-dot presence.

Analytic, no learning: pixels far from the grey background and clearly chromatic belong to
the shape; near-black, achromatic pixels belong to the dot. Validated against the renderer
in tests/test_toyworld.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toyworld.render import BAND, COLOURS, PALETTE, SHAPES, erode

__all__ = ["Reading", "read_image", "read_images"]

_DOT_MIN_PIXELS = 12      # a dot of radius 5 covers about 78 pixels at 64x64
_SHAPE_MIN_PIXELS = 30


@dataclass(frozen=True)
class Reading:
    colour: str | None
    shape: str | None
    style: str | None
    dot: bool
    dot_pixels: int
    stripe_score: float
    fill_ratio: float


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every region of ~mask not connected to the border (numpy flood fill)."""
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = (
        ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1])
    free = ~mask
    while True:
        p = np.pad(outside, 1, constant_values=False)
        grown = (outside | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]) & free
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def _interior_fill(shape_px: np.ndarray, filled: np.ndarray, size: int) -> float:
    """Fraction of the shape's deep interior (5 px in at 64x64) that is painted."""
    interior = erode(filled, max(1, round(5 * size / 64)))
    if interior.sum() < 3:
        return float(shape_px.sum()) / float(max(1, filled.sum()))
    return float(shape_px[interior].mean())


def _classify_shape(filled: np.ndarray) -> tuple[str | None, float]:
    ys, xs = np.nonzero(filled)
    if len(ys) < _SHAPE_MIN_PIXELS:
        return None, 0.0
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    ratio = len(ys) / float(h * w)
    # square ~ 1.0, circle ~ pi/4 = 0.785, triangle ~ 0.5
    if ratio > 0.89:
        return "square", ratio
    if ratio > 0.64:
        return "circle", ratio
    return "triangle", ratio


def read_image(img: np.ndarray) -> Reading:
    """Classify one image, float (H, W, 3) in [0, 1] or uint8."""
    img = np.asarray(img, np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    size = img.shape[0]
    vmax, vmin = img.max(-1), img.min(-1)
    chroma = vmax - vmin
    dot_mask = (vmax < 0.25) & (chroma < 0.12)
    dot_pixels = int(dot_mask.sum() * (64.0 / size) ** 2)
    shape_px = chroma > 0.22
    if shape_px.sum() < _SHAPE_MIN_PIXELS * (size / 64.0) ** 2:
        return Reading(None, None, None, dot_pixels >= _DOT_MIN_PIXELS, dot_pixels, 0.0, 0.0)
    colour = _classify_colour(img[shape_px])
    filled = _fill_holes(shape_px)
    shape, ratio = _classify_shape(filled)
    stripe = _stripe_score(img, shape_px, colour)
    if _interior_fill(shape_px, filled, size) < 0.5:
        style = "outlined"
    elif stripe > _STRIPE_MIN_CONTRAST:
        style = "striped"
    else:
        style = "plain"
    return Reading(colour, shape, style, dot_pixels >= _DOT_MIN_PIXELS, dot_pixels, stripe, ratio)


_STRIPE_MIN_CONTRAST = 0.35  # renders: striped 1.0, plain and outlined 0.0


def _classify_colour(pixels: np.ndarray) -> str:
    # compare chromaticity (colour direction), so dark stripe bands vote like bright ones
    norm = pixels / np.maximum(pixels.sum(-1, keepdims=True), 1e-6)
    ref = np.array([PALETTE[c] for c in COLOURS], np.float32)
    ref = ref / ref.sum(-1, keepdims=True)
    votes = np.argmin(((norm[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)
    return COLOURS[int(np.bincount(votes, minlength=len(COLOURS)).argmax())]


def _stripe_score(img: np.ndarray, shape_px: np.ndarray, colour: str) -> float:
    """Band contrast: dark fraction of the shape in the dark bands minus that in the bright ones.

    Stripes put the dark shade on every other band of rows (the odd ones, as drawn); a shape
    that is merely darker or blotchy is dark in both kinds of band and scores near 0.
    """
    ref = max(PALETTE[colour])
    dark = shape_px & (img.max(-1) < 0.72 * ref)
    band = max(1, round(BAND * img.shape[0] / 64.0))
    odd = ((np.arange(img.shape[0]) // band) % 2 == 1)[:, None]
    in_odd, in_even = shape_px & odd, shape_px & ~odd
    if in_odd.sum() == 0 or in_even.sum() == 0:
        return 0.0
    return float(dark[in_odd].mean() - dark[in_even].mean())


def read_images(images) -> list[Reading]:
    """Classify a batch: (B, H, W, 3) array or an iterable of images."""
    return [read_image(im) for im in images]


SHAPES_READ = SHAPES  # re-exported for callers that tabulate by shape
