"""LinEAS on a tiny random-weight transformers model: it must move the activations it is fitted
to move, on held-out texts, with the settings ``act fit --method lineas`` uses by default."""

from __future__ import annotations

import random

import pytest

transformers = pytest.importorskip("transformers")

from act_core import hf  # noqa: E402
from act_core.hf.cli import build_parser, lineas_config  # noqa: E402
from act_core.hf.lineas import fit_lm_lineas, heldout_closed  # noqa: E402
from act_core.lineas import LineasConfig  # noqa: E402
from harness.hf_tiny import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _texts(alphabet: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
                     for _ in range(rng.randint(3, 7))) for _ in range(n)]


def _cli_defaults() -> LineasConfig:
    """The LineasConfig ``act fit --method lineas`` builds when no option is given."""
    args = ["fit", "--model", "m", "--source", "s", "--target", "t", "--method", "lineas",
            "-o", "o"]
    return lineas_config(build_parser().parse_args(args))


def test_lineas_defaults_close_the_gap_on_held_out_texts():
    """Source texts of lowercase letters, target texts of digits and capitals: the pooled
    activations differ at every site. Fitted at the CLI's defaults on 16 + 16 texts at the 8
    sites of post_norms + mlp_out + attn_out of a 2-layer model, LinEAS's own loss must fall,
    and the maps, applied all at once, must carry held-out source texts most of the way to
    held-out target texts."""
    model, tokenizer = tiny_causal_lm("llama")
    source = _texts("abcdefghij", 28, 0)
    target = _texts("0123456789XYZ", 28, 1)
    sites = hf.lm_sites(model, ["post_norms", "mlp_out", "attn_out"])
    config = _cli_defaults()
    fit = fit_lm_lineas(model, tokenizer, source[:16], target[:16], sites, lineas=config,
                        max_length=32)
    assert len(fit.losses) == config.steps
    assert sum(fit.losses[-5:]) / 5 < 0.5 * fit.losses[0], fit.losses
    closed = heldout_closed(model, tokenizer, fit.maps, source[16:], target[16:],
                            max_length=32)
    assert closed > 0.5, closed
