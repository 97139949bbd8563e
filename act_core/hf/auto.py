"""``sites = auto`` for language models: candidate site groups scored on held-out texts.

As AcT Learn Transport's ``auto`` does on a denoiser (:mod:`act_core.selection`): the last third
of the source and of the target texts (at most :data:`MOST_HELD`) are held out; maps for the
union of the candidates' sites are fitted all at once on the rest; each candidate's maps are
then applied (strength 1, the given support) while the held-out source texts run, and the
model's last hidden state (the final norm's output, pooled over each text's tokens as fitting
pools) is compared with the held-out target texts'. The score is that gap over the gap without
maps (lower is better, 1 = no closer to the target); the lowest wins. The two held-out sets
compare as samples (per unit, the 1-D Wasserstein distance of the pooled outputs), even when
they hold as many texts: two lists of texts need not be pairs, and row-by-row differences of
unrelated rows would reward maps that shrink the spread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from act_core.errors import SiteError
from act_core.selection import Selection, heldout_split, score_candidates

__all__ = ["CANDIDATES", "MOST_HELD", "choose_lm_sites", "final_norm_site"]

#: The candidate site groups, by name: the presets alone and the three together.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "attn_out": ("attn_out",),
    "mlp_out": ("mlp_out",),
    "post_norms": ("post_norms",),
    "post_norms + mlp_out + attn_out": ("post_norms", "mlp_out", "attn_out"),
}
#: At most this many texts per side are held out (texts are cheap to run, unlike images).
MOST_HELD = 32

_IN_A_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.\d+\.")


def final_norm_site(model: Any) -> str:
    """The name of the model's final norm (the last ``layernorms`` site outside the blocks).

    Raises
    ------
    SiteError
        When the model has none the presets recognise.
    """
    from act_core.hf.lm import lm_sites

    outside = [str(site) for site in lm_sites(model, "layernorms")
               if not _IN_A_BLOCK.search(str(site))]
    if not outside:
        raise SiteError(f"{type(model).__name__}: no final norm found to compare outputs at; "
                        "choose --sites (a preset or patterns) instead of auto")
    return outside[-1]


def choose_lm_sites(model: Any, tokenizer: Any, source: Sequence[str], target: Sequence[str],
                    *, support: str = "minmax", method: str = "linear_act",
                    max_length: int = 64, batch_size: int = 16,
                    skip_first_token: bool = False,
                    candidates: dict[str, tuple[str, ...]] | None = None
                    ) -> tuple[tuple[str, ...], Selection | None]:
    """The candidate sites (preset names) with the smallest held-out gap, and the selection
    (None when a set has fewer than 2 texts: the first candidate, nothing measured)."""
    from act_core.hf.lm import fit_lm, lm_sites, run_texts, steering
    from act_core.record import record_activations

    groups = dict(candidates or CANDIDATES)
    first = next(iter(groups))
    fit_s, held_s = heldout_split(len(source), most=MOST_HELD)
    fit_t, held_t = heldout_split(len(target), most=MOST_HELD)
    if not held_s or not held_t or len(groups) == 1:
        return groups[first], None
    options = {"max_length": max_length, "batch_size": batch_size,
               "skip_first_token": skip_first_token}
    presets = list(dict.fromkeys(p for group in groups.values() for p in group))
    maps = fit_lm(model, tokenizer, [source[i] for i in fit_s], [target[i] for i in fit_t],
                  presets, method=method, incremental=False, **options)
    out = final_norm_site(model)

    def outputs(texts: list[str], applied: Any) -> Any:
        with steering(model, applied, 1.0, support, skip_first_token=skip_first_token), \
                record_activations(model, [out]) as recorder:
            run_texts(model, tokenizer, texts, recorder, **options)
        return recorder.stacked()[out]  # (N, D)

    held_source = [source[i] for i in held_s]
    selection = score_candidates(
        {name: lm_sites(model, list(group)) for name, group in groups.items()}, maps,
        lambda chosen: outputs(held_source, chosen), outputs([target[i] for i in held_t], None),
        (len(held_s), len(held_t)), paired=False, label="act auto")
    return groups[selection.chosen], selection
