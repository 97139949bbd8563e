"""Transformers integration: fit and apply maps on a causal language model from text.

The same estimators and map files as everywhere in ``act_core``; this module only turns lists of
strings into batched, padded forward passes and records the model hint in the map file::

    from act_core import hf
    model, tokenizer = hf.load_causal_lm("smollm2")
    maps = hf.fit_lm(model, tokenizer, source_texts, target_texts, sites="attn_out")
    hf.save_lm_maps("detox.safetensors", maps, model)
    maps = hf.load_lm_maps("detox.safetensors", model)      # refuses a map of another model
    from act_core.hf.generate import generate
    texts = generate(model, tokenizer, prompts, maps, strength=1.0)

Every example contributes one vector per site: the mean over its non-padding tokens (the
recorder's ``token_mask`` is set to the batch's attention mask). Transformers is imported lazily.

**The first token.** Causal LMs park huge values on each sequence's first token (an "attention
sink": on SmolLM2 a feed-forward output reaches 22,000 there, against about 6 on any other
token). A mean over tokens is then dominated by ``x_0 / length``, and a map fitted on such means
scales that outlier at apply time. ``skip_first_token=True`` (``fit_lm``, ``record_texts``,
``run_texts``) pools over the other tokens only, and :func:`steering` then leaves each
sequence's first token unchanged; the choice is stored in the map file (``SKIP_FIRST_TOKEN``
in its extra metadata) and read back by :func:`steering`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from act_core.apply import apply_transport
from act_core.errors import MapCompatibilityError
from act_core.fitting import fit_sites
from act_core.gate import gate_maps
from act_core.hf.models import load_causal_lm
from act_core.hf.presets import detect_family, model_hint, preset_names, site_patterns
from act_core.mapfile import load_maps, save_maps
from act_core.maps import TransportMap
from act_core.mapset import MapSet, check_compatible, hint_mismatches, prompt_hash
from act_core.record import Recorder, record_activations
from act_core.sites import Site, resolve_sites, site_widths
from act_core.units import check_unit_method

__all__ = [
    "SKIP_FIRST_TOKEN", "check_model_hint", "detect_family", "first_token_mask", "fit_lm",
    "forward_texts", "load_causal_lm", "load_lm_maps", "lm_sites", "model_hint", "preset_names",
    "progress_bar", "record_texts", "run_texts", "save_lm_maps", "skips_first_token", "steering",
]

log = logging.getLogger(__name__)

#: Key of the map file's extra metadata that records ``skip_first_token`` fitting.
SKIP_FIRST_TOKEN = "skip_first_token"


def progress_bar(iterable: Any, total: int | None = None, desc: str = "", enabled: bool = False):
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` and tqdm is installed."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar, same iteration
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


def lm_sites(model: Any, sites: str | Sequence[str] = "attn_out") -> list[Site]:
    """Resolve a preset name (see :func:`preset_names`) or patterns to sites of ``model``."""
    return resolve_sites(model, site_patterns(model, sites))


def _batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    return [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


@torch.inference_mode()
def run_texts(model: Any, tokenizer: Any, texts: Sequence[str], recorder: Recorder | None = None,
              *, batch_size: int = 16, max_length: int = 64, progress: bool = False,
              desc: str = "forward", skip_first_token: bool = False) -> None:
    """Run the forward pass over ``texts`` in right-padded batches.

    When ``recorder`` is given its ``token_mask`` is set to each batch's attention mask (B, T),
    so that padding tokens are not pooled; with ``skip_first_token`` each text's first token is
    not pooled either (kept for a text of one token, which has no other).
    """
    forward_texts(model, tokenizer, texts, recorder, batch_size=batch_size,
                  max_length=max_length, progress=progress, desc=desc,
                  skip_first_token=skip_first_token)


def forward_texts(model: Any, tokenizer: Any, texts: Sequence[str], recorder: Any = None, *,
                  batch_size: int = 16, max_length: int = 64, progress: bool = False,
                  desc: str = "forward", skip_first_token: bool = False) -> None:
    """:func:`run_texts` in the caller's grad mode (LinEAS runs it with gradients on)."""
    device = next(model.parameters()).device
    batches = _batches(texts, batch_size)
    for batch in progress_bar(batches, len(batches), desc, progress):
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, padding_side="right").to(device)
        if recorder is not None:
            mask = enc["attention_mask"]  # (B, T), right padding: column 0 is the first token
            if skip_first_token and mask.shape[1] > 1:
                mask = mask.clone()
                mask[:, 0] = (mask[:, 1] == 0).to(mask.dtype)
            recorder.token_mask = mask
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)


def record_texts(model: Any, tokenizer: Any, texts: Sequence[str],
                 sites: str | Sequence[str] = "attn_out", **kwargs: Any
                 ) -> dict[str, torch.Tensor]:
    """Pooled activations ``{site: Tensor (len(texts), D)}`` (keyword args as :func:`run_texts`)."""
    with record_activations(model, lm_sites(model, sites)) as recorder:
        run_texts(model, tokenizer, texts, recorder, **kwargs)
    return recorder.stacked()


def fit_lm(model: Any, tokenizer: Any, source_texts: Sequence[str], target_texts: Sequence[str],
           sites: str | Sequence[str] = "attn_out", *, method: str = "linear_act",
           incremental: bool = True, stages: int | None = None, batch_size: int = 16,
           max_length: int = 64, progress: bool | Callable[[int, int], None] = False,
           skip_first_token: bool = False, lineas: Any = None,
           samples: dict | None = None, gate: bool | str = False,
           unit_z: float = 0.0, unit_stat: str = "welch") -> dict[str, TransportMap]:
    """Fit one map per site carrying source-text activations onto target-text activations.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer.
    source_texts, target_texts : sequence of str
        One example per string (N and M examples; N != M is fine).
    sites : str or sequence of str
        A preset (``attn_out``, ``post_norms``, ``layernorms``, ``mlp_out``) or site patterns.
        The default ``attn_out`` (attention output projections, the paper's Llama-3 choice)
        measured far cheaper in perplexity than ``post_norms`` on SmolLM2 (docs/llm.md).
    method : str
        Estimator (``linear_act``, ``mean_act``, ``gaussian_ot``, ``aura``, ``diff_means``),
        or ``lineas`` (every site learned jointly, end to end: :mod:`act_core.lineas`).
    incremental, stages
        See :func:`act_core.fitting.fit_sites`; ``stages`` groups sites to bound the number of
        source passes (None: one pass per site, the paper's procedure).
    progress : bool or callable(done, total)
        True shows a progress bar over the forward passes (tqdm); a callable is called instead.
    skip_first_token : bool
        Pool each text over its tokens after the first (see the module notes); during
        incremental fitting the earlier maps then leave the first token unchanged, as
        :func:`steering` will. Save with ``save_lm_maps(..., skip_first_token=True)``.
    lineas : LineasConfig, optional
        Settings of ``method="lineas"`` (:mod:`act_core.lineas`: all sites learned jointly).
    samples : dict, optional
        Filled with the pooled ``"source"`` and ``"target"`` samples (and, for LinEAS, the
        ``"transported"`` source), for :func:`act_core.diagnose.diagnose`.
    gate : bool or str
        Also learn a gate per site from the same samples (:mod:`act_core.gate`): steering then
        acts on a token in proportion to how source-like it looks. True or ``"token"``: each
        token by itself; ``"prefix"``: the text up to the token (its running mean).
    unit_z : float
        Keep only units whose means differ by more than ``unit_z`` standard errors
        (:func:`act_core.fitting.fit_sites`); 0 keeps all. Not for LinEAS (see ``l1``).
        ``unit_stat="paired"`` reads the differences of paired texts (``toxicity:paired``).

    Returns
    -------
    dict of site -> TransportMap (each of width D = the site's output width), forward order.
    """
    if gate:
        samples = {} if samples is None else samples
        maps = fit_lm(model, tokenizer, source_texts, target_texts, sites, method=method,
                      incremental=incremental, stages=stages, batch_size=batch_size,
                      max_length=max_length, progress=progress,
                      skip_first_token=skip_first_token, lineas=lineas, samples=samples,
                      unit_z=unit_z, unit_stat=unit_stat)
        pooling = gate if isinstance(gate, str) else "token"
        return gate_maps(maps, samples["source"], samples["target"], pooling=pooling)
    resolved = lm_sites(model, sites)
    options = {"batch_size": batch_size, "max_length": max_length,
               "skip_first_token": skip_first_token}
    if method == "lineas":
        from act_core.hf.lineas import fit_lm_lineas

        check_unit_method(unit_z, method)
        fitted = fit_lm_lineas(model, tokenizer, source_texts, target_texts, resolved,
                               lineas=lineas, progress=progress, **options)
        if samples is not None:
            samples.update(source=fitted.source, target=fitted.target,
                           transported=fitted.transported)
        return fitted.maps

    def run(texts: Sequence[str]):
        return lambda recorder: run_texts(model, tokenizer, texts, recorder, **options)

    callback = _pass_bar() if progress is True else (progress or None)
    tracking = first_token_mask(model) if skip_first_token else nullcontext()
    try:
        with tracking as keep:
            return fit_sites(model, resolved, run(source_texts), run(target_texts),
                             method=method, incremental=incremental, stages=stages,
                             progress=callback, keep_tokens=keep, samples=samples,
                             unit_z=unit_z, unit_stat=unit_stat)
    finally:
        getattr(callback, "close", lambda: None)()


class _pass_bar:  # noqa: N801 - used like a function
    """Progress callback drawing a tqdm bar over fitting passes (no-op without tqdm)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            bar = progress_bar(range(total), total, "fitting passes", True)
            self.bar = bar if hasattr(bar, "update") else False
        if self.bar:
            self.bar.update(done - self.bar.n)
        log.debug("fitting: pass %d/%d done", done, total)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def save_lm_maps(path: Any, maps: Mapping[str, TransportMap], model: Any, *,
                 source_texts: Sequence[str] | None = None,
                 target_texts: Sequence[str] | None = None,
                 metadata: Mapping[str, Any] | None = None, support: str = "minmax",
                 skip_first_token: bool | None = None) -> Any:
    """Save maps with the model hint (:func:`model_hint`) so another model is refused on load.

    ``skip_first_token`` records how the maps were fitted (:func:`fit_lm`), under
    :data:`SKIP_FIRST_TOKEN` in the extra metadata, so that :func:`steering` applies them the
    same way; None keeps what ``metadata`` or a loaded MapSet already says.
    """
    digest = None
    if source_texts is not None and target_texts is not None:
        digest = prompt_hash(source_texts, target_texts)
    if skip_first_token is not None:
        if metadata is None and isinstance(maps, MapSet):
            metadata = maps.metadata.get("extra")
        metadata = {**(metadata or {}), SKIP_FIRST_TOKEN: bool(skip_first_token)}
    return save_maps(path, maps, metadata, model=model_hint(model), prompt_hash=digest,
                     support=support)


def skips_first_token(maps: Mapping[str, TransportMap] | None) -> bool:
    """Whether a loaded map file was fitted with ``skip_first_token`` (False for plain dicts)."""
    if not isinstance(maps, MapSet):
        return False
    return bool((maps.metadata.get("extra") or {}).get(SKIP_FIRST_TOKEN, False))


def _cached_length(kwargs: dict) -> int:
    """Tokens already in the KV cache of a forward call (0 without a cache)."""
    past = kwargs.get("past_key_values")
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    if isinstance(past, (tuple, list)) and past and isinstance(past[0], (tuple, list)):
        return int(past[0][0].shape[-2])  # legacy (key, value) tuples, (B, H, T, d)
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor) and cache_position.numel() > 0:
        return int(cache_position.reshape(-1)[0])
    return 0


class _FirstTokens:
    """Forward pre-hook of a causal LM: where each sequence's first token is in this call."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is None:
            self.mask = None
            return
        batch, length = ids.shape[0], ids.shape[1]
        attention = kwargs.get("attention_mask")
        if isinstance(attention, torch.Tensor) and attention.ndim == 2:
            # the mask covers the cached tokens too; its first 1 is the first real token
            first = attention.to(torch.int8).argmax(dim=1) - (attention.shape[1] - length)
        else:  # no padding: the first token is at cache position 0
            first = torch.full((batch,), -_cached_length(kwargs), dtype=torch.long,
                               device=ids.device)
        inside = (first >= 0) & (first < length)
        if not bool(inside.any()):
            self.mask = None
            return
        mask = torch.zeros(batch, length, dtype=torch.bool, device=ids.device)
        rows = torch.nonzero(inside).reshape(-1)
        mask[rows, first[rows]] = True
        self.mask = mask

    def get(self) -> torch.Tensor | None:
        return self.mask


@contextmanager
def first_token_mask(model: Any) -> Iterator[Callable[[], torch.Tensor | None]]:
    """Track each sequence's first token across the model's forward calls.

    Yields a callable for :func:`act_core.apply.apply_transport`'s ``keep_tokens``: it returns
    a (B, T) bool mask of the first (non-padding) token of every sequence in the current call,
    or None when the call holds none (decoding steps with a cache). Works with left or right
    padding: the position is read from the attention mask, which covers cached tokens too.
    The pre-hook is removed when the context exits.
    """
    tracker = _FirstTokens()
    handle = model.register_forward_pre_hook(tracker, with_kwargs=True)
    try:
        yield tracker.get
    finally:
        handle.remove()


def check_model_hint(maps: Mapping[str, TransportMap], model: Any) -> None:
    """Refuse maps fitted on a different model (family, depth or width), naming the fix.

    Raises
    ------
    MapCompatibilityError
        When the recorded hint disagrees with ``model``, or a map's width is not the model's.
    """
    recorded = (maps.metadata.get("model") or {}) if isinstance(maps, MapSet) else {}
    current = model_hint(model)
    wrong = hint_mismatches(recorded, current, ("family", "num_layers", "hidden"))
    if wrong:
        name = recorded.get("name_or_path") or "another model"
        raise MapCompatibilityError(
            f"these maps were fitted on {name}: " + ", ".join(wrong)
            + f"; they do not fit {current['name_or_path'] or type(model).__name__}. "
            "Fix: fit maps for this model (act fit --model ...) or load the matching file.")
    check_compatible(maps, site_widths(model, maps, maps))


def load_lm_maps(path: Any, model: Any | None = None) -> MapSet:
    """Load a map file; with ``model``, check it was fitted on a compatible model."""
    maps = load_maps(path)
    if model is not None:
        check_model_hint(maps, model)
    return maps


@contextmanager
def steering(model: Any, maps: Mapping[str, TransportMap] | None, strength: float = 1.0,
             support: str = "minmax", skip_first_token: bool | None = None) -> Iterator[None]:
    """Apply ``maps`` at ``strength`` inside the context (nothing when maps is empty or None).

    ``skip_first_token`` leaves each sequence's first token unchanged; None (default) does
    what the map file records (:func:`skips_first_token`), False for maps not from a file.
    A set with a sequence gate (``maps.sequence_gate``, :mod:`act_core.hf.gating`) steers a
    sequence's tokens only from its first token that passes the gate.
    """
    if not maps:
        yield
        return
    if skip_first_token is None:
        skip_first_token = skips_first_token(maps)
    gate = getattr(maps, "sequence_gate", None)
    if gate is not None and strength != 0:
        with _sequence_steering(model, maps, gate, strength, support, skip_first_token):
            yield
        return
    with first_token_mask(model) if skip_first_token else nullcontext() as keep:
        with apply_transport(model, maps, strength, support, keep_tokens=keep):
            yield


@contextmanager
def _sequence_steering(model: Any, maps: Mapping[str, TransportMap], gate: Any,
                       strength: float, support: str, skip_first_token: bool) -> Iterator[None]:
    """:func:`steering` for a set with a sequence gate (:mod:`act_core.hf.gating`): a token is
    steered once its sequence's gate is on; calls with no token on leave the model as it is."""
    from act_core.hf.gating import gated_strength, sequence_gating
    from act_core.strength import check_strength

    for tmap in maps.values():
        check_strength(strength, None, tmap)  # the callable below is not checked per call
    with sequence_gating(model, gate) as state, \
            first_token_mask(model) if skip_first_token else nullcontext() as first:
        def keep() -> torch.Tensor | None:
            off = state.keep()
            head = first() if first is not None else None
            return off if head is None or off is None else off | head.to(off.device)

        with apply_transport(model, maps, gated_strength(state, strength), support,
                             keep_tokens=keep):
            yield
