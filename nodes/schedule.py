"""Where in the sampling schedule maps apply, and with which strength per batch item.

Pure functions of sigmas and ComfyUI's ``cond_or_uncond`` list (0 = conditional chunk,
1 = unconditional chunk of the CFG batch); no ComfyUI import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..act_core.timesteps import range_key as bucket_key
from ..act_core.timesteps import split_range_key as split_bucket_key

__all__ = ["APPLY_TO", "Schedule", "bucket_key", "split_bucket_key"]

APPLY_TO = ("both", "conditional", "unconditional")


@dataclass(frozen=True)
class Schedule:
    """Strength lambda on [start, end] of the schedule, sigma bounds precomputed.

    ``sigma_start`` >= ``sigma_end`` (sigmas fall during sampling); ``bucket_sigmas`` are the
    boundaries between timestep ranges, from the noisiest down (empty for one range).
    """

    strength: float
    sigma_start: float
    sigma_end: float
    apply_to: str = "both"
    bucket_sigmas: tuple[float, ...] = ()

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

    def per_item(self, cond_or_uncond: list[int] | None, batch: int) -> float | torch.Tensor:
        """A float when every item gets the same strength, else a (B,) tensor."""
        if self.apply_to == "both" or not cond_or_uncond:
            return self.strength
        wanted = 0 if self.apply_to == "conditional" else 1
        chunk = batch // len(cond_or_uncond)
        values = [self.strength if c == wanted else 0.0 for c in cond_or_uncond]
        if len(set(values)) == 1:
            return values[0]
        return torch.tensor(values, dtype=torch.float32).repeat_interleave(chunk)
