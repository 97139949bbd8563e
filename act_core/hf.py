"""Transformers integration: fit and apply maps on a causal language model from text.

The same estimators and map files as everywhere in ``act_core``; this module only turns lists of
strings into batched, padded forward passes and records the model hint in the map file::

    from act_core import hf
    model, tokenizer = hf.load_causal_lm("smollm2")
    maps = hf.fit_lm(model, tokenizer, source_texts, target_texts, sites="attn_out")
    hf.save_lm_maps("detox.safetensors", maps, model)
    maps = hf.load_lm_maps("detox.safetensors", model)      # refuses a map of another model
    texts = hf.generate(model, tokenizer, prompts, maps, strength=1.0)

Every example contributes one vector per site: the mean over its non-padding tokens (the
recorder's ``token_mask`` is set to the batch's attention mask). Transformers is imported lazily.
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
from act_core.hf_models import load_causal_lm
from act_core.hf_presets import detect_family, model_hint, preset_names, site_patterns
from act_core.mapfile import load_maps, save_maps
from act_core.maps import TransportMap
from act_core.mapset import MapSet, check_compatible, prompt_hash
from act_core.record import Recorder, record_activations
from act_core.sites import Site, resolve_sites

__all__ = [
    "check_model_hint",
    "detect_family",
    "fit_lm",
    "load_causal_lm",
    "load_lm_maps",
    "lm_sites",
    "model_hint",
    "preset_names",
    "progress_bar",
    "record_texts",
    "run_texts",
    "save_lm_maps",
    "steering",
]

log = logging.getLogger(__name__)


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
              desc: str = "forward") -> None:
    """Run the forward pass over ``texts`` in right-padded batches.

    When ``recorder`` is given its ``token_mask`` is set to each batch's attention mask (B, T),
    so that padding tokens are not pooled.
    """
    device = next(model.parameters()).device
    batches = _batches(texts, batch_size)
    for batch in progress_bar(batches, len(batches), desc, progress):
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, padding_side="right").to(device)
        if recorder is not None:
            recorder.token_mask = enc["attention_mask"]  # (B, T)
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
           max_length: int = 64, progress: bool | Callable[[int, int], None] = False
           ) -> dict[str, TransportMap]:
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
        Estimator (``linear_act``, ``mean_act``, ``gaussian_ot``, ``aura``, ``diff_means``).
    incremental, stages
        See :func:`act_core.fitting.fit_sites`; ``stages`` groups sites to bound the number of
        source passes (None: one pass per site, the paper's procedure).
    progress : bool or callable(done, total)
        True shows a progress bar over the forward passes (tqdm); a callable is called instead.

    Returns
    -------
    dict of site -> TransportMap (each of width D = the site's output width), forward order.
    """
    resolved = lm_sites(model, sites)
    options = {"batch_size": batch_size, "max_length": max_length}

    def run(texts: Sequence[str]):
        return lambda recorder: run_texts(model, tokenizer, texts, recorder, **options)

    callback = _pass_bar() if progress is True else (progress or None)
    try:
        return fit_sites(model, resolved, run(source_texts), run(target_texts), method=method,
                         incremental=incremental, stages=stages, progress=callback)
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
                 metadata: Mapping[str, Any] | None = None, support: str = "minmax") -> Any:
    """Save maps with the model hint (:func:`model_hint`) so another model is refused on load."""
    digest = None
    if source_texts is not None and target_texts is not None:
        digest = prompt_hash(source_texts, target_texts)
    return save_maps(path, maps, metadata, model=model_hint(model), prompt_hash=digest,
                     support=support)


def check_model_hint(maps: Mapping[str, TransportMap], model: Any) -> None:
    """Refuse maps fitted on a different model (family, depth or width), naming the fix.

    Raises
    ------
    MapCompatibilityError
        When the recorded hint disagrees with ``model``, or a map's width is not the model's.
    """
    recorded = (maps.metadata.get("model") or {}) if isinstance(maps, MapSet) else {}
    current = model_hint(model)
    wrong = [f"{key} {recorded[key]!r} (this model: {current[key]!r})"
             for key in ("family", "num_layers", "hidden")
             if recorded.get(key) is not None and recorded[key] != current[key]]
    if wrong:
        name = recorded.get("name_or_path") or "another model"
        raise MapCompatibilityError(
            f"these maps were fitted on {name}: " + ", ".join(wrong)
            + f"; they do not fit {current['name_or_path'] or type(model).__name__}. "
            "Fix: fit maps for this model (act fit --model ...) or load the matching file.")
    modules = dict(model.named_modules())
    widths = {site: w for site in maps
              if (w := _site_width(modules.get(Site.parse(site).name))) is not None}
    check_compatible({site: maps[site] for site in widths}, widths)


def _site_width(module: Any) -> int | None:
    """Output width of a module when it can be read from its parameters (None: unknown)."""
    if module is None:
        return None
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1:
        return int(weight.shape[0])
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):
        return int(weight.shape[1])  # GPT-2's transposed linear: weight (in, out)
    return None


def load_lm_maps(path: Any, model: Any | None = None) -> MapSet:
    """Load a map file; with ``model``, check it was fitted on a compatible model."""
    maps = load_maps(path)
    if model is not None:
        check_model_hint(maps, model)
    return maps


@contextmanager
def steering(model: Any, maps: Mapping[str, TransportMap] | None, strength: float = 1.0,
             support: str = "minmax") -> Iterator[None]:
    """Apply ``maps`` at ``strength`` inside the context (nothing when maps is empty or None)."""
    ctx = apply_transport(model, maps, strength, support) if maps else nullcontext()
    with ctx:
        yield
