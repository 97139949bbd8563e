"""Strength curves over sampling progress and the sigma -> percent conversion."""

from __future__ import annotations

import math

import pytest

from act_core.curves import Curve, CurveError, SigmaProgress, parse_keyframes


def test_named_curves_at_known_points():
    assert [Curve()(p) for p in (0, 0.3, 1)] == [1.0, 1.0, 1.0]
    ramp = Curve("linear", start=0.0, end=1.0)
    assert [ramp(p) for p in (0, 0.25, 1)] == [0.0, 0.25, 1.0]
    down = Curve("linear", start=1.0, end=0.2)
    assert down(0.5) == pytest.approx(0.6)
    front, late = Curve("front"), Curve("late")
    assert (front(0), front(1)) == (1.0, pytest.approx(0.0, abs=1e-12))
    assert (late(0), late(1)) == (0.0, 1.0)
    assert front(0.5) == pytest.approx(0.5) and late(0.5) == pytest.approx(0.5)
    assert front(0.25) == pytest.approx(math.cos(math.pi / 8) ** 2)
    assert front(0.25) > late(0.25) and front(0.75) < late(0.75)
    for p in (0.1, 0.4, 0.9):  # front-loaded + late sum to one everywhere
        assert front(p) + late(p) == pytest.approx(1.0)
    assert ramp(-3) == 0.0 and ramp(7) == 1.0  # clamped progress


def test_keyframes_interpolate_and_hold_like_comfyui():
    points = parse_keyframes("0.2:0, 0.5:1\n 0.8:0.5")
    assert points == ((0.2, 0.0), (0.5, 1.0), (0.8, 0.5))
    linear = Curve("keyframes", points=points)
    assert [linear(p) for p in (0.0, 0.2, 0.35, 0.5, 0.65, 1.0)] == pytest.approx(
        [0.0, 0.0, 0.5, 1.0, 0.75, 0.5])
    hold = Curve("hold", points=points)  # ComfyUI HookKeyframe: hold until the next one
    assert [hold(p) for p in (0.0, 0.19, 0.2, 0.49, 0.5, 0.9)] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.5]
    assert len(linear.sample(11)) == 11 and linear.sample(3)[1] == (0.5, 1.0)


@pytest.mark.parametrize("text, match", [
    ("", "at least one"), ("0.5", "percent:value"), ("0.5:1, 0.4:0", "increasing"),
    ("1.5:1", r"\[0, 1\]"), ("0:-1", ">= 0"), ("a:b", "percent:value")])
def test_bad_keyframes_are_refused_with_the_fix(text, match):
    with pytest.raises(CurveError, match=match):
        parse_keyframes(text)


def test_bad_curves_are_refused():
    with pytest.raises(CurveError, match="one of"):
        Curve("cosine")
    with pytest.raises(CurveError, match=">= 0"):
        Curve("linear", start=-1.0)
    with pytest.raises(CurveError, match="at least one"):
        Curve("keyframes")


def test_sigma_progress_inverts_percent_to_sigma():
    # a discrete-DDPM-like schedule: sigma falls from 14.6 to 0.03, exponentially in percent
    def percent_to_sigma(p: float) -> float:
        return 14.6 * (0.03 / 14.6) ** p

    progress = SigmaProgress(percent_to_sigma)
    for p in (0.001, 0.1, 0.37, 0.5, 0.9, 0.999):
        assert progress(percent_to_sigma(p)) == pytest.approx(p, abs=2e-4)
    assert progress(1000.0) == 0.0 and progress(0.0) == 1.0
