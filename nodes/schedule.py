"""The core's apply settings (:class:`act_core.schedule.ApplySettings`) on ComfyUI's sigmas.

ComfyUI tells a model call where it is in the schedule by its sigma, not by a percentage:
:class:`Schedule` holds the sigmas of the settings' range and of the timestep-range bounds,
computed once from the model's ``model_sampling``. No ComfyUI import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..act_core.schedule import ApplySettings
from ..act_core.timesteps import range_key as bucket_key
from ..act_core.timesteps import split_range_key as split_bucket_key

__all__ = ["Schedule", "bucket_key", "split_bucket_key"]


@dataclass(frozen=True)
class Schedule:
    """Settings with their sigma bounds precomputed.

    ``sigma_start`` >= ``sigma_end`` (sigmas fall during sampling); ``bucket_sigmas`` are the
    boundaries between timestep ranges, from the noisiest down (empty for one range).
    """

    settings: ApplySettings
    sigma_start: float
    sigma_end: float
    bucket_sigmas: tuple[float, ...] = ()

    @classmethod
    def of(cls, settings: ApplySettings, sampling, ranges: int) -> Schedule:
        """The schedule of ``settings`` on a model's ``model_sampling`` (its
        ``percent_to_sigma``), for maps with ``ranges`` timestep ranges."""
        sigma = sampling.percent_to_sigma
        return cls(settings, float(sigma(settings.start_percent)),
                   float(sigma(settings.end_percent)),
                   tuple(float(sigma(k / ranges)) for k in range(1, ranges)))

    @property
    def strength(self) -> float:
        return self.settings.strength

    @property
    def constant(self) -> bool:
        """True when every step gets the same maps and strength: the whole schedule, one
        timestep range. The current sigma is then not needed (reading it from the device
        would make the host wait for the accelerator at every model call)."""
        return (not self.bucket_sigmas and self.sigma_start >= 999999999.0
                and self.sigma_end <= 0.0)

    def active(self, sigma: float) -> bool:
        return self.strength != 0 and self.sigma_end <= sigma <= self.sigma_start

    def bucket(self, sigma: float) -> int:
        """Index of the timestep range that sigma falls in (0 = noisiest)."""
        return sum(1 for bound in self.bucket_sigmas if sigma < bound)

    def per_item(self, cond_or_uncond: list[int] | None, batch: int,
                 strength: float | None = None) -> float | torch.Tensor:
        """A float when every item gets the same strength, else a (B,) tensor."""
        return self.settings.per_item(cond_or_uncond, batch, strength)
