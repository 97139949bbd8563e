"""Trajectory collection (act_core.trajectory) on a tiny denoiser: the steps of a range, an euler
sampler that records only some steps, and earlier ranges' maps applied on their own steps."""

from __future__ import annotations

import torch
from torch import nn

from act_core import diff_means, record_activations
from act_core.trajectory import Trajectory, steps_in_range

SIGMAS = torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.0])  # 6 steps, falling


class _Denoiser(nn.Module):
    """denoised = lin(x) (B, 3); sigma only scales the input, as a k-diffusion model's would."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.lin(x / (1.0 + sigma[:, None]))


def test_steps_in_range_splits_the_schedule_at_the_bounds():
    steps = SIGMAS[:6]
    assert steps_in_range(steps, [5.0], 0, 7.0) == (0, 3)  # sigmas 10, 8, 6
    assert steps_in_range(steps, [5.0], 1, 2.0) == (3, 6)  # sigmas 4, 2, 1
    # a range narrower than one step (9 <= sigma < 9.5): the step nearest its middle, 10
    assert steps_in_range(steps, [9.5, 9.0], 1, 9.25) == (0, 1)


def test_the_sampler_records_only_its_steps_and_stops_after_them():
    model, x0 = _Denoiser(), torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    trajectory = Trajectory()
    calls = []
    with record_activations(model, ["lin"]) as recorder:
        trajectory.recorder = recorder
        handle = model.lin.register_forward_hook(lambda m, a, o: calls.append(recorder.paused))
        try:
            out = trajectory.sampler((2, 4))(model, x0, SIGMAS)
        finally:
            handle.remove()
    assert calls == [True, True, False, False]  # steps 0-3 run, 2 and 3 recorded, then stop
    assert recorder.stacked()["lin"].shape == (4, 3)  # 2 steps x 2 items
    x = x0  # the same euler steps, written out
    with torch.no_grad():
        for i in range(4):
            d = model(x, SIGMAS[i] * torch.ones(2))
            x = x + (x - d) / SIGMAS[i] * (SIGMAS[i + 1] - SIGMAS[i])
    assert torch.allclose(out, x)
    assert trajectory.step == 3


def test_earlier_maps_act_on_their_own_steps_only():
    model, x0 = _Denoiser(), torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    source = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))
    shift = diff_means(source, source + 100.0)  # omega = 1, beta = 100 per unit
    trajectory = Trajectory()

    def run(recorder) -> None:
        trajectory.recorder = recorder
        trajectory.sampler((0, 6))(model, x0, SIGMAS)

    steered = trajectory.steered(model, run, [({"lin": shift}, (1, 3))], "unbounded")
    with torch.no_grad(), record_activations(model, ["lin"]) as recorder:
        steered(recorder)
    rows = recorder.stacked()["lin"]  # (6 steps x 2 items, 3), what left the module
    expected, x = [], x0  # the euler steps written out, +100 on steps 1 and 2
    with torch.no_grad():
        for i in range(6):
            d = model.lin(x / (1.0 + SIGMAS[i]))
            if i in (1, 2):
                d = d + shift.shift
            expected.append(d)
            x = x + (x - d) / SIGMAS[i] * (SIGMAS[i + 1] - SIGMAS[i])
    assert torch.allclose(rows, torch.cat(expected), atol=1e-4)
    during = trajectory.during((1, 3))
    assert [(setattr(trajectory, "step", i), during())[1] for i in range(4)] == [0, 1, 1, 0]
