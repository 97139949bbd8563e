"""LinEAS on a transformers causal LM: texts in, jointly learned maps out.

Used by :func:`act_core.hf.fit_lm` with ``method="lineas"``; the source texts are the inputs
that LinEAS draws batches from (``LineasConfig.batch_size`` texts per step), the target texts
run once. Padding and (optionally) each text's first token are left out of the pooled means,
exactly as for the other estimators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from act_core.lineas import LineasConfig, LineasFit, fit_lineas
from act_core.sites import Site

__all__ = ["fit_lm_lineas", "heldout_closed"]


def fit_lm_lineas(model: Any, tokenizer: Any, source_texts: Sequence[str],
                  target_texts: Sequence[str], sites: Sequence[Site], *,
                  lineas: LineasConfig | None = None,
                  progress: bool | Callable[[int, int], None] = False, batch_size: int = 16,
                  max_length: int = 64, skip_first_token: bool = False) -> LineasFit:
    """Learn maps for ``sites`` by LinEAS (see :func:`act_core.hf.fit_lm` for the arguments).

    ``batch_size`` is the batch of the target pass; the source batch of a step is
    ``lineas.batch_size``.
    """
    from act_core.hf.lm import _pass_bar, first_token_mask, forward_texts, run_texts

    config = lineas or LineasConfig()
    options = {"max_length": max_length, "skip_first_token": skip_first_token}
    device = next(model.parameters()).device
    source = list(source_texts)

    def run_source(indices: Sequence[int], recorder: Any) -> None:
        texts = [source[i] for i in indices]
        forward_texts(model, tokenizer, texts, recorder, batch_size=len(texts), **options)

    def run_target(recorder: Any) -> None:
        run_texts(model, tokenizer, target_texts, recorder, batch_size=batch_size, **options)

    callback = _pass_bar() if progress is True else (progress or None)
    tracking = first_token_mask(model) if skip_first_token else nullcontext()
    try:
        with tracking as keep:
            return fit_lineas(model, sites, run_source, len(source), run_target, config=config,
                              progress=callback, device=device, keep_tokens=keep)
    finally:
        getattr(callback, "close", lambda: None)()


def heldout_closed(model: Any, tokenizer: Any, maps: Any, source_texts: Sequence[str],
                   target_texts: Sequence[str], *, support: str = "unbounded",
                   max_length: int = 64, skip_first_token: bool = False,
                   batch_size: int = 16) -> float:
    """How much of the source-target separation ``maps`` close on texts they were not fitted on.

    Records the maps' sites on ``source_texts`` without and with every map applied at once
    (strength 1, ``support``) and on ``target_texts``, and returns
    :func:`act_core.diagnose.closed_share` (1 = all of it, below 0 = worse than no map). Any
    estimator's maps can be compared this way, since the maps act together as when steering.
    """
    from act_core.diagnose import closed_share
    from act_core.hf.lm import run_texts, steering
    from act_core.record import record_activations

    options = {"batch_size": batch_size, "max_length": max_length,
               "skip_first_token": skip_first_token}

    def record(texts: Sequence[str], applied: Any) -> dict:
        with steering(model, applied, 1.0, support, skip_first_token=skip_first_token), \
                record_activations(model, list(maps)) as recorder:
            run_texts(model, tokenizer, texts, recorder, **options)
        return recorder.stacked()

    return closed_share(record(source_texts, None), record(target_texts, None),
                        record(source_texts, maps))
