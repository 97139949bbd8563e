"""Shared pieces of the SmolLM2 benchmarks: model loading, cached fitting, result tables.

Run the benchmarks from the repository root with the project's venv, e.g.
``nice -n 19 .venv/bin/python -m benchmarks.llm_toxicity --split eval``.
Fitted maps are cached under ``<cache>/llm_maps/`` (``act_core.hf.models.cache_dir()``, keyed
by data, method and sites), so a rerun only regenerates text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

from act_core import hf  # noqa: E402
from act_core.estimators import fit_many  # noqa: E402
from act_core.hf.models import cache_dir  # noqa: E402
from act_core.mapset import MapSet, prompt_hash  # noqa: E402

__all__ = ["fit_all_at_once", "fit_or_load", "load_model", "markdown_table", "save_json", "setup"]

log = logging.getLogger("benchmarks")
ALL_METHODS = ("linear_act", "mean_act", "gaussian_ot", "aura", "diff_means")


def setup(threads: int | None = None) -> None:
    """Logging to stderr, and optionally the number of torch threads."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if threads:
        torch.set_num_threads(threads)


def load_model(name: str = "smollm2"):
    """``(model, tokenizer)`` of the benchmark model."""
    start = time.perf_counter()
    model, tokenizer = hf.load_causal_lm(name)
    log.info("loaded %s in %.1f s", model.config.name_or_path, time.perf_counter() - start)
    return model, tokenizer


def _presets(sites: str | Sequence[str]) -> str | list[str]:
    """``"post_norms+mlp_out"`` -> ``["post_norms", "mlp_out"]`` (a union of presets)."""
    return sites.split("+") if isinstance(sites, str) and "+" in sites else sites


def fit_or_load(model, tokenizer, data_name: str, source: Sequence[str], target: Sequence[str],
                method: str, sites: str | Sequence[str], stages: int | None = None, *,
                incremental: bool = True, tag: str | None = None,
                skip_first_token: bool = False) -> MapSet:
    """Fit maps (or load them from the cache when the same texts were fitted before).

    ``sites`` is a preset, presets joined by ``+`` (their union, e.g. ``post_norms+mlp_out``),
    or a list of site names (then ``tag`` names it in the cache file);
    ``incremental=False`` fits all at once (``stages`` is then ignored);
    ``skip_first_token`` pools over each text's tokens after the first (``hf.fit_lm``).
    """
    name = data_name.replace(":", "-")
    fitting = (f"s{stages}" if incremental else "once") + ("_skip1" if skip_first_token else "")
    sites_tag = tag or (sites if isinstance(sites, str) else f"{len(sites)}sites")
    path = cache_dir() / "llm_maps" / f"{name}_{method}_{sites_tag}_{fitting}.safetensors"
    if path.exists():
        maps = hf.load_lm_maps(path, model)
        digest = prompt_hash(source, target)
        if maps.metadata.get("prompt_hash") == digest:
            return maps
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    maps = hf.fit_lm(model, tokenizer, source, target, _presets(sites), method=method,
                     stages=stages, incremental=incremental, skip_first_token=skip_first_token)
    log.info("fitted %s/%s on %d+%d texts at %d sites in %.0f s", data_name, method,
             len(source), len(target), len(maps), time.perf_counter() - start)
    hf.save_lm_maps(path, maps, model, source_texts=source, target_texts=target,
                    metadata={"data": data_name, "sites": sites_tag, "stages": stages,
                              "incremental": incremental}, skip_first_token=skip_first_token)
    return hf.load_lm_maps(path, model)


def fit_all_at_once(model, tokenizer, data_name: str, source: Sequence[str],
                    target: Sequence[str], methods: Sequence[str], sites: str, *,
                    skip_first_token: bool = False) -> dict:
    """Maps of several estimators from ONE recording of the source and target activations.

    All-at-once fitting (no incremental passes): every estimator sees the same samples, so the
    comparison between estimators is exact and the cost is two passes over the texts. Once the
    activations are recorded, every estimator of :data:`ALL_METHODS` is fitted and cached.
    ``sites``: a preset, or presets joined by ``+`` (their union). ``skip_first_token``: as
    :func:`fit_or_load`.
    """
    tag = data_name.replace(":", "-")
    once = "once_skip1" if skip_first_token else "once"
    paths = {m: cache_dir() / "llm_maps" / f"{tag}_{m}_{sites}_{once}.safetensors"
             for m in (*methods, *ALL_METHODS)}
    digest = prompt_hash(source, target)
    out = {}
    for method, path in paths.items():
        if path.exists():
            maps = hf.load_lm_maps(path, model)
            if maps.metadata.get("prompt_hash") == digest:
                out[method] = maps
    missing = [m for m in methods if m not in out]
    if not missing:
        return out
    start = time.perf_counter()
    src = hf.record_texts(model, tokenizer, source, _presets(sites),
                          skip_first_token=skip_first_token)
    tgt = hf.record_texts(model, tokenizer, target, _presets(sites),
                          skip_first_token=skip_first_token)
    log.info("recorded %d+%d texts at %d sites in %.0f s", len(source), len(target), len(src),
             time.perf_counter() - start)
    for method in ALL_METHODS if set(missing) <= set(ALL_METHODS) else missing:
        maps = fit_many({site: (src[site], tgt[site]) for site in src}, method)
        paths[method].parent.mkdir(parents=True, exist_ok=True)
        hf.save_lm_maps(paths[method], maps, model, source_texts=source, target_texts=target,
                        metadata={"data": data_name, "sites": sites, "incremental": False},
                        skip_first_token=skip_first_token)
        if method in methods:
            out[method] = hf.load_lm_maps(paths[method], model)
    return out


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` (dicts) with the given columns."""
    def cell(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def save_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def finish(args, rows: list[dict], columns: Sequence[str], **extra) -> dict:
    """Print the rows as a table, save them with the arguments to ``args.out`` if set."""
    table = markdown_table(rows, columns)
    print(table)
    result = {"args": vars(args), "rows": rows, **extra, "table": table}
    if args.out:
        save_json(args.out, result)
    return result
