"""The toy world's two AcT experiments: which prompts the maps are fitted on and judged on.

Each is fitted on half of the colour x shape combinations and evaluated on the other half
(held out):
- style: source = plain prompts, target = the same with "striped"; judged on held-out plain
  prompts;
- negation: source = prompts " with a black dot", target = the same without; judged on
  held-out prompts that ask for the dot.
``evaluation.act_eval`` runs them through the real ComfyUI server; the example workflows, the
demo and the benchmarks use the same prompt sets and site presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .checkpoint import CHECKPOINT_NAME as CKPT
from .render import COLOURS, SHAPES, STYLES, Scene

__all__ = ["CKPT", "EXPERIMENTS", "Experiment", "NEGATION_SITES", "STYLE_SITES", "fit_combos",
           "heldout_combos", "negation_experiment", "style_experiment"]

# the site preset for removing the dot: the norms alone need strength 1.25 (results_toyworld.md)
NEGATION_SITES = "norms + cross-attention outputs"
# the site preset for adding stripes: where the prompt's global code enters the UNet
STYLE_SITES = "cross-attention outputs"


def fit_combos() -> list[tuple[str, str]]:
    """Half of the colour x shape combinations (every colour and shape appears)."""
    return [(c, s) for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES) if (i + j) % 2 == 0]


def heldout_combos() -> list[tuple[str, str]]:
    return [(c, s) for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES) if (i + j) % 2 == 1]


@dataclass(frozen=True)
class Experiment:
    name: str
    source: list[str]
    target: list[str]
    heldout: list[Scene]          # what is prompted at evaluation
    support: str
    presence: str                 # "striped" or "dot"
    sites: str = "auto"           # ActLearnTransport's site preset
    notes: str = ""
    extra: dict = field(default_factory=dict)


def style_experiment(style: str = "striped") -> Experiment:
    fit = fit_combos()
    return Experiment(
        name=f"style_{style}",
        source=[Scene(c, s).prompt for c, s in fit],
        target=[Scene(c, s, style).prompt for c, s in fit],
        heldout=[Scene(c, s) for c, s in heldout_combos()],
        support="unbounded", presence=style, sites=STYLE_SITES)


def negation_experiment() -> Experiment:
    fit = fit_combos()
    return Experiment(
        name="negation_dot",
        source=[Scene(c, s, st, True).prompt for st in STYLES for c, s in fit],
        target=[Scene(c, s, st, False).prompt for st in STYLES for c, s in fit],
        heldout=[Scene(c, s, st, True) for st in STYLES for c, s in heldout_combos()],
        support="unbounded", presence="dot", sites=NEGATION_SITES)


EXPERIMENTS = {"style": style_experiment, "negation": negation_experiment}

