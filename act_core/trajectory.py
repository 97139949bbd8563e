"""Collecting activations along a sampling trajectory, one timestep range at a time.

A map for one timestep range acts on the states that sampling reaches on that range's steps; the
best place to record its source and target activations is therefore a real trajectory, not one
evaluation of the denoiser on noise. :class:`Trajectory` is what a host needs for that, for any
denoiser that follows the k-diffusion convention ``denoised = model(x, sigma * ones(B))``:

* :meth:`Trajectory.sampler`: an euler sampler (no guidance) that records only the steps
  ``first <= i < stop`` of the schedule and stops after the last of them;
* :meth:`Trajectory.during`: a strength callable, 1 while the sampler runs one of some steps,
  else 0 (a range's maps act on their own steps only);
* :meth:`Trajectory.steered`: a host's ``run(recorder)`` with the maps of earlier ranges applied
  on their steps, so that a range is fitted on the states that sampling with the earlier ranges'
  maps reaches (incremental fitting, across time);
* :func:`steps_in_range`: the steps of a schedule whose sigma falls in a timestep range.

The host supplies the schedule's sigmas and runs the sampler its own way (ComfyUI: through its
sampling path, so that every model patch applies).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .apply import apply_transport
from .maps import TransportMap
from .support import SupportLike

__all__ = ["Steps", "Trajectory", "steps_in_range"]

#: Steps ``(first, stop)`` of a schedule: ``first <= i < stop``.
Steps = tuple[int, int]


def steps_in_range(sigmas: torch.Tensor, bounds: Sequence[float], k: int,
                   middle: float) -> Steps:
    """The steps ``(first, stop)`` whose sigma falls in timestep range ``k``.

    Parameters
    ----------
    sigmas : Tensor, shape (S,) or (S + 1,)
        The schedule's sigmas, falling; step i runs at ``sigmas[i]`` (a trailing 0 is ignored
        when S steps are asked for: pass ``sigmas[:S]``).
    bounds : sequence of float
        The sigmas between ranges, from the noisiest down (K - 1 values for K ranges): a step
        is in range ``k`` when its sigma is below exactly ``k`` bounds.
    k : int
        The range, 0 = noisiest.
    middle : float
        The sigma of the range's middle: a range narrower than one step gets the step nearest
        to it.
    """
    inside = [i for i in range(int(sigmas.shape[0]))
              if sum(1 for bound in bounds if float(sigmas[i]) < bound) == k]
    if not inside:
        inside = [int(torch.argmin((sigmas - middle).abs()))]
    return inside[0], inside[-1] + 1


@dataclass
class Trajectory:
    """The state a trajectory's passes share: the recorder of the current pass (set by the
    host's ``run(recorder)``; paused outside the recorded steps) and the step being run."""

    recorder: Any = None
    step: int = -1

    def sampler(self, recorded: Steps) -> Callable[..., torch.Tensor]:
        """An euler sampler ``sample(model, x, sigmas, extra_args=None, callback=None,
        disable=None)`` that records steps ``recorded[0] <= i < recorded[1]`` only and stops
        after the last of them; x (B, ...) is the noised latent, sigmas (S + 1,)."""
        first, stop = recorded

        def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
            ones = x.new_ones([x.shape[0]])  # (B,)
            for i in range(min(stop, len(sigmas) - 1)):
                self.step = i
                self.recorder.paused = not first <= i < stop
                try:
                    denoised = model(x, sigmas[i] * ones, **(extra_args or {}))
                finally:
                    self.recorder.paused = False
                x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
            return x

        return sample

    def during(self, steps: Steps) -> Callable[[], float]:
        """A strength callable: 1 while the sampler runs a step of ``steps``, else 0."""
        first, stop = steps
        return lambda: 1.0 if first <= self.step < stop else 0.0

    def steered(self, model: nn.Module, run: Callable[[Any], None],
                earlier: Sequence[tuple[dict[str, TransportMap], Steps]],
                support: SupportLike) -> Callable[[Any], None]:
        """``run`` with each ``(maps, steps)`` of ``earlier`` applied to ``model`` on its own
        steps, as a sampler with those ranges' maps applies them."""
        def run_steered(recorder) -> None:
            with contextlib.ExitStack() as stack:
                for maps, steps in earlier:
                    stack.enter_context(apply_transport(model, maps, self.during(steps),
                                                        support))
                run(recorder)

        return run_steered
