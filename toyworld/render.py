"""Draw toy-world scenes: one coloured shape, a style, and optionally a black dot.

Images are float32 arrays (H, W, 3) in [0, 1], on a light grey background. Stripes are
horizontal bands aligned to an 8-pixel grid (the VAE's latent cell), so that they survive
an x8 autoencoder; a striped shape alternates its colour with a darker shade of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLOURS", "SHAPES", "STYLES", "PALETTE", "Scene", "all_scenes", "parse_prompt",
    "erode", "render", "shape_mask",
]

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
STYLES = ("plain", "striped", "outlined")  # "plain" is written as no style word
PALETTE = {
    "red": (0.86, 0.12, 0.10),
    "green": (0.12, 0.68, 0.18),
    "blue": (0.12, 0.25, 0.88),
    "yellow": (0.95, 0.82, 0.08),
}
BACKGROUND = 0.84
DARK = 0.45          # a stripe's dark band is this fraction of the colour
BAND = 8             # stripe band height in pixels (aligned to the latent grid)
OUTLINE = 4          # outline width in pixels
DOT_RADIUS = 5.0


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    style: str = "plain"
    dot: bool = False

    @property
    def prompt(self) -> str:
        words = ["a"] + ([] if self.style == "plain" else [self.style]) + [self.colour, self.shape]
        return " ".join(words) + (" with a black dot" if self.dot else "")


def all_scenes(dots: tuple[bool, ...] = (False, True)) -> list[Scene]:
    """Every colour x shape x style (x dot) combination, in a fixed order."""
    return [Scene(c, s, st, d) for d in dots for st in STYLES for c in COLOURS for s in SHAPES]


def parse_prompt(prompt: str) -> Scene:
    """Read a toy-world prompt back into a Scene (ValueError if it is not one)."""
    words = prompt.strip().lower().split()
    dot = words[-4:] == ["with", "a", "black", "dot"]
    if dot:
        words = words[:-4]
    if not words or words[0] != "a" or len(words) not in (3, 4):
        raise ValueError(f"not a toy-world prompt: {prompt!r}")
    style = words[1] if len(words) == 4 else "plain"
    colour, shape = words[-2], words[-1]
    if style not in STYLES or colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"not a toy-world prompt: {prompt!r}")
    return Scene(colour, shape, style, dot)


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (size, size) mask of a filled shape of half-extent r centred at (cx, cy)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        s = r * 0.9
        return (np.abs(xx - cx) <= s) & (np.abs(yy - cy) <= s)
    if shape == "triangle":  # upward, apex at top
        top, bottom = cy - r, cy + r
        t = np.clip((yy - top) / (bottom - top), 0, 1)
        half = t * r * 1.1
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """4-neighbour binary erosion, ``steps`` times (pixels outside count as empty)."""
    m = mask.copy()
    for _ in range(steps):
        p = np.pad(m, 1, constant_values=False)
        m = m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m


def render(scene: Scene, size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw a scene as a float32 (size, size, 3) image in [0, 1].

    With ``rng`` the position, size, shade and background jitter a little; without it the
    scene is drawn in its canonical pose.
    """
    k = size / 64.0

    def jit(a: float) -> float:
        return 0.0 if rng is None else float(rng.uniform(-a, a))

    cx, cy = (26 + jit(3)) * k, (34 + jit(3)) * k
    r = (16 + jit(2)) * k
    img = np.full((size, size, 3), BACKGROUND + jit(0.03), np.float32)
    colour = np.clip(np.array(PALETTE[scene.colour], np.float32) + jit(0.04), 0, 1)
    mask = shape_mask(scene.shape, size, cx, cy, r)
    if scene.style == "outlined":
        mask = mask & ~erode(mask, max(1, round(OUTLINE * k)))
        img[mask] = colour
    elif scene.style == "striped":
        band = max(1, round(BAND * k))
        rows = (np.arange(size) // band) % 2 == 1
        img[mask] = colour
        dark = mask & rows[:, None]
        img[dark] = colour * DARK
    else:
        img[mask] = colour
    if scene.dot:
        dx, dy = (52 + jit(2)) * k, (14 + jit(2)) * k
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        img[(xx - dx) ** 2 + (yy - dy) ** 2 <= (DOT_RADIUS * k) ** 2] = 0.04
    if rng is not None:
        img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)
